# SPDX-License-Identifier: MIT
"""A fused-MoE runner with the contract of SGLang's AITER MoE runner, run by moed.

    runner = moed.MoeRunner(client, weights)
    out = runner(hidden_states, topk_ids, topk_weights, no_combine=False,
                 fused_moe_kwargs={"block_rows": 64})

- fused_moe_kwargs (dict or None) is forwarded to the daemon's backend; a key the
  backend's signature does not list, a value of the wrong type or out of range raises
  ValueError naming the key (checked here, and again by the daemon).
- supports_no_combine() is the backend's capability, probed once and cached;
  no_combine=True where it is withheld raises NotImplementedError saying which backend
  and why, before any shortcut for empty input.
- Empty input (M = 0) returns an array of shape (0, topk, hidden) under no_combine and
  (0, hidden) otherwise, without a round trip.

Inputs are numpy arrays (bf16 as uint16 bits: moed.to_bf16) or CPU torch tensors; the
output is a view of the client's arena of the input's kind and dtype.
"""
import errno
import math

import numpy as np

from . import _lib, aio, dtypes
from .client import KwargsBlob, MoedError


class _Prepared:
    __slots__ = ("job", "output", "keep", "result", "torch_out", "code")


class MoeRunner:
    def __init__(self, client, weights):
        self.client, self.weights = client, weights

    def supports_no_combine(self):
        """The backend's capability, from its signature (asked once, cached by the client)."""
        return self.client.supports_no_combine()

    def __call__(self, hidden_states, topk_ids, topk_weights, **options):
        p = self._prepare(hidden_states, topk_ids, topk_weights, **options)
        if p.result is not None:
            return p.result
        status, message, _ = self.client.wait(self.client.submit(p.job, p))
        return self._finish(p, status, message)

    async def run_async(self, hidden_states, topk_ids, topk_weights, **options):
        """The same, awaited on the running asyncio loop (moed.aio)."""
        p = self._prepare(hidden_states, topk_ids, topk_weights, **options)
        if p.result is not None:
            return p.result
        status, message, _ = await aio.completion(self.client, await aio.submit(self.client, p.job, p))
        return self._finish(p, status, message)

    # ---- checks, in the order the contract needs ---------------------------------------

    def _check_kwargs(self, kwargs):
        if kwargs is None:
            return []
        if not isinstance(kwargs, dict):
            raise ValueError(f"fused_moe_kwargs must be a dict or None, not {type(kwargs).__name__}")
        sig = self.client.signature
        for key, value in kwargs.items():
            spec = sig.kwargs.get(key)
            if spec is None:
                known = ", ".join(sorted(sig.kwargs)) or "none"
                raise ValueError(f"fused_moe_kwargs: unknown key {key!r} for moed backend "
                                 f"'{sig.backend}' (it accepts: {known})")
            _check_value(spec, key, value)
        return [(key, value, sig.kwargs[key].type) for key, value in kwargs.items()]

    def _prepare(self, hidden_states, topk_ids, topk_weights, *, activation="silu", no_combine=False,
                 apply_router_weight_on_input=False, routed_scaling_factor=None, fused_moe_kwargs=None):
        sig = self.client.signature
        if no_combine and not self.supports_no_combine():
            raise NotImplementedError(
                f"no_combine is not supported by moed backend '{sig.backend}': the daemon does not "
                "offer it (its signature lacks the no_combine capability, e.g. moed --withhold "
                "no_combine); ask for the combined output instead")
        if apply_router_weight_on_input and not sig.router_weight_on_input:
            raise NotImplementedError(
                f"apply_router_weight_on_input is not supported by moed backend '{sig.backend}' "
                "(its signature lacks the capability)")
        if activation not in _lib.ACTIVATIONS or activation not in sig.activations:
            raise ValueError(f"activation {activation!r} is not one of moed backend "
                             f"'{sig.backend}''s: {', '.join(sorted(sig.activations))}")
        items = self._check_kwargs(fused_moe_kwargs)
        p = _Prepared()
        p.torch_out = dtypes.is_tensor(hidden_states)
        x = dtypes.tensor_to_numpy(hidden_states, "hidden_states") if p.torch_out else np.asarray(hidden_states)
        ids = dtypes.tensor_to_numpy(topk_ids, "topk_ids") if dtypes.is_tensor(topk_ids) else np.asarray(topk_ids)
        tw = (dtypes.tensor_to_numpy(topk_weights, "topk_weights") if dtypes.is_tensor(topk_weights)
              else np.asarray(topk_weights))
        p.code = dtypes.code_of(x)
        h = self.weights.hidden_size
        if x.ndim != 2 or x.shape[1] != h:
            raise ValueError(f"hidden_states is {list(x.shape)}; the weights want [M, {h}]")
        m = x.shape[0]
        if ids.ndim != 2 or ids.shape[0] != m or tw.shape != ids.shape:
            raise ValueError(f"topk_ids {list(ids.shape)} and topk_weights {list(tw.shape)} must both "
                             f"be [{m}, topk]")
        k = ids.shape[1]
        if apply_router_weight_on_input and k != 1:
            raise ValueError(f"apply_router_weight_on_input needs topk 1, not {k}")
        scale = 1.0 if routed_scaling_factor is None else float(routed_scaling_factor)
        if not math.isfinite(scale):
            raise ValueError(f"routed_scaling_factor must be finite, not {routed_scaling_factor}")
        out_shape = (m, k, h) if no_combine else (m, h)
        p.result = None
        if m == 0:
            empty = np.empty(out_shape, dtype=x.dtype)
            p.result = dtypes.numpy_to_tensor(empty, p.code) if p.torch_out else empty
            return p
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"topk_ids must be integers, not {ids.dtype}")
        if ids.dtype != np.int32 and (ids.min() < 0 or ids.max() >= self.weights.num_experts):
            # Checked before the conversion to int32 could wrap a bad id onto a good one;
            # int32 ids are the daemon's to check.
            raise ValueError(f"topk_ids holds {ids.min() if ids.min() < 0 else ids.max()}, outside "
                             f"[0, {self.weights.num_experts})")
        c = self.client
        xa, ia, wa = c.put(x), c.put(ids, np.int32), c.put(tw, np.float32)
        p.output = c.empty(out_shape, x.dtype)
        blob = KwargsBlob(c, items) if items else None
        p.keep = (xa, ia, wa, blob)
        p.job = _lib.MoeJob(weights=self.weights.handle, dtype=p.code, activation=_lib.ACTIVATIONS[activation],
                            no_combine=bool(no_combine), router_weight_on_input=bool(apply_router_weight_on_input),
                            num_tokens=m, topk=k, hidden_size=h, routed_scaling_factor=scale,
                            hidden=xa.ctypes.data, topk_ids=ia.ctypes.data, topk_weights=wa.ctypes.data,
                            output=p.output.ctypes.data,
                            kwargs=blob.array.ctypes.data if blob else None,
                            kwargs_size=blob.array.nbytes if blob else 0)
        return p

    def _finish(self, p, status, message):
        if status == -errno.EINVAL:
            raise ValueError(message)
        if status == -errno.EOPNOTSUPP:
            raise NotImplementedError(message)
        if status < 0:
            raise MoedError(-status, message)
        return dtypes.numpy_to_tensor(p.output, p.code) if p.torch_out else p.output


def _check_value(spec, key, value):
    """ValueError naming `key` where `value` does not fit the backend's spec."""
    want = spec.TYPES.get(spec.type, "?")
    if spec.type == _lib.KWARG_BOOL:
        ok = isinstance(value, (bool, np.bool_))
    elif spec.type == _lib.KWARG_INT64:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if ok and not spec.min <= value <= spec.max:
            raise ValueError(f"fused_moe_kwargs[{key!r}] = {value} is out of range [{spec.min}, {spec.max}]")
    elif spec.type == _lib.KWARG_DOUBLE:
        ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
        if ok and not (math.isfinite(value) and spec.dmin <= value <= spec.dmax):
            raise ValueError(f"fused_moe_kwargs[{key!r}] = {value} is out of range [{spec.dmin}, {spec.dmax}]")
    elif spec.type == _lib.KWARG_STRING:
        ok = isinstance(value, str)
        if ok and spec.max_len and len(value.encode()) > spec.max_len:
            raise ValueError(f"fused_moe_kwargs[{key!r}] is {len(value.encode())} bytes long, more than "
                             f"{spec.max_len}")
        if ok and spec.choices and value not in spec.choices:
            raise ValueError(f"fused_moe_kwargs[{key!r}] = {value!r} is not one of {', '.join(spec.choices)}")
    else:
        ok = isinstance(value, (list, tuple, np.ndarray)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        if ok and spec.max_len and len(value) > spec.max_len:
            raise ValueError(f"fused_moe_kwargs[{key!r}] has {len(value)} elements, more than {spec.max_len}")
        if ok and any(not spec.min <= v <= spec.max for v in value):
            raise ValueError(f"fused_moe_kwargs[{key!r}] has elements out of range [{spec.min}, {spec.max}]")
    if not ok:
        raise ValueError(f"fused_moe_kwargs[{key!r}] must be {want}, not {type(value).__name__}")
