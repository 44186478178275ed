# SPDX-License-Identifier: MIT
"""A connection to the moed daemon: the arena as numpy arrays, weight sets, jobs.

A Client is not thread-safe (as libmoed's client is not): use one per thread, or lock.
Arrays from Client.empty() are views of the arena the daemon shares; they must not be
used after Client.close(), and their memory returns to the arena when the last view of
each is gone.
"""
import ctypes
import errno
import os
import weakref

import numpy as np

from . import _lib, dtypes
from ._lib import lib


class MoedError(OSError):
    """A call or a job the daemon or libmoed refused: errno and the daemon's message."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code


def _check(rc, client, what):
    if rc < 0:
        msg = lib.moed_client_error(client).decode(errors="replace") if client else ""
        raise MoedError(-rc, f"{what}: {msg or os.strerror(-rc)}")
    return rc


class KwargSpec:
    """One kwarg a backend accepts (its signature): name, type and limits."""

    TYPES = {_lib.KWARG_BOOL: "bool", _lib.KWARG_INT64: "int", _lib.KWARG_DOUBLE: "float",
             _lib.KWARG_STRING: "str", _lib.KWARG_INT64_ARRAY: "list of int"}

    def __init__(self, wire):
        self.name = wire.name.decode()
        self.type = wire.type
        self.min, self.max = wire.min, wire.max
        self.dmin, self.dmax = wire.dmin, wire.dmax
        self.max_len = wire.max_len
        self.choices = [c for c in wire.choices.decode().split(",") if c]
        self.help = wire.help.decode()

    def __repr__(self):
        return f"KwargSpec({self.name!r}, {self.TYPES.get(self.type, self.type)})"


class Signature:
    """What the daemon's backend accepts: its name, capabilities, dtypes, kwargs."""

    def __init__(self, wire):
        self.backend = wire.backend.decode()
        self.caps = wire.caps
        self.dtypes = {n for n, c in dtypes.NAMES.items() if wire.dtypes >> c & 1}
        self.activations = {n for n, c in _lib.ACTIVATIONS.items() if wire.activations >> c & 1}
        self.kwargs = {s.name: s for s in (KwargSpec(wire.kwargs[i]) for i in range(wire.kwarg_count))}

    @property
    def no_combine(self):
        return bool(self.caps & _lib.CAP_NO_COMBINE)

    @property
    def router_weight_on_input(self):
        return bool(self.caps & _lib.CAP_ROUTER_WEIGHT_ON_INPUT)


class Weights:
    """A handle on a weight set held by the daemon (one copy for all its clients)."""

    def __init__(self, client, handle, shape):
        self.client, self.handle = client, handle
        self.num_experts, self.hidden_size = shape.num_experts, shape.hidden_size
        self.inter_size, self.dtype, self.gated = shape.inter_size, shape.dtype, bool(shape.gated)

    def release(self):
        if self.handle:
            _check(lib.moed_weights_release(self.client._h, self.handle), self.client._c,
                   "moed: releasing weights")
            self.handle = 0


class Client:
    """connect(); then empty() arrays in the arena, weights, submit() and wait()."""

    def __init__(self, socket=None, *, name=None, sq_entries=0, arena_size=0, spin_us=None):
        self._c = None
        err = ctypes.create_string_buffer(256)
        opts = _lib.ConnectOptions(name=(name or f"python:{os.getpid()}").encode(),
                                   sq_entries=sq_entries, arena_size=arena_size,
                                   spin_us=20 if spin_us is None else spin_us,
                                   error=ctypes.cast(err, ctypes.c_char_p), error_len=len(err))
        handle = ctypes.c_void_p()
        rc = lib.moed_connect(socket.encode() if socket else None, ctypes.byref(opts), ctypes.byref(handle))
        if rc < 0:
            raise MoedError(-rc, f"moed: cannot connect: {err.value.decode(errors='replace')}")
        self._c = handle.value
        self._signature = None
        self._next = 1
        self._done = {}      # completions reaped for tickets not yet asked for
        self._waiters = {}   # ticket -> asyncio future (moed.aio)
        self._space = []     # futures awaiting room in the submission ring (moed.aio)
        self._keep = {}      # ticket -> the arena arrays its job uses, until it completes
        self._async = None
        self._batch = (_lib.Completion * 16)()  # reaped into, by poll() and wait()

    @property
    def _h(self):
        """The libmoed handle; MoedError once closed (libmoed takes no NULL client)."""
        if not self._c:
            raise MoedError(errno.EBADF, "moed: the client is closed")
        return self._c

    def close(self):
        if self._c:
            if self._async:
                self._async.detach()
            lib.moed_close(self._c)
            self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    # ---- what the backend accepts --------------------------------------------------------

    @property
    def signature(self):
        """The backend's signature, asked of the daemon once and cached."""
        if self._signature is None:
            sig = lib.moed_signature(self._h)
            if not sig:
                _check(-errno.EIO, self._c, "moed: reading the backend's signature")
            self._signature = Signature(sig.contents)
        return self._signature

    def supports_no_combine(self):
        return self.signature.no_combine

    # ---- the arena ---------------------------------------------------------------------------

    def empty(self, shape, dtype):
        """An uninitialised array of `shape` in the arena. dtype: a numpy dtype (float32,
        float16, int32, uint16 for bf16 bits) or "f32", "bf16", "f16"."""
        if isinstance(dtype, str):
            if dtype not in dtypes.NAMES:
                raise ValueError(f"moed: dtype {dtype!r} is not one of {', '.join(dtypes.NAMES)}")
            dt = dtypes.numpy_dtype(dtypes.NAMES[dtype])
        else:
            dt = np.dtype(dtype)
        shape = tuple(int(n) for n in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        nbytes = count * dt.itemsize
        ptr = lib.moed_arena_alloc(self._h, max(nbytes, 1))
        if not ptr:
            raise MemoryError(f"moed: the arena has no room for {nbytes} bytes "
                              "(free arrays, or connect with a larger arena_size)")
        buf = (ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr)
        # The allocation goes back when the buffer (every view's base) is collected; the
        # finalizer holds the client, so the arena outlives its arrays unless closed.
        weakref.finalize(buf, Client._free, self, ptr)
        return np.frombuffer(buf, dtype=dt, count=count).reshape(shape)

    def _free(self, ptr):
        if self._c:
            lib.moed_arena_free(self._c, ptr)

    def in_arena(self, array):
        """Whether a numpy array lies wholly in this client's arena."""
        size = ctypes.c_size_t()
        base = lib.moed_arena_base(self._h, ctypes.byref(size))
        start = array.__array_interface__["data"][0]
        return base <= start and start + array.nbytes <= base + size.value

    def put(self, array, dtype=None):
        """`array` in the arena: itself if it lies there and is contiguous, else a copy."""
        array = np.asarray(array, dtype=dtype)
        if array.flags.c_contiguous and self.in_arena(array):
            return array
        out = self.empty(array.shape, array.dtype)
        out[...] = array
        return out

    # ---- weight sets ---------------------------------------------------------------------

    def register_weights(self, name, w13, w2, *, gated=True):
        """Register weight set `name` and upload w13 [E, 2I or I, H] and w2 [E, H, I]
        (float32, float16, or uint16 bf16 bits), or attach to the committed set of that
        name and shape."""
        w13, w2 = np.ascontiguousarray(w13), np.ascontiguousarray(w2)
        code = dtypes.code_of(w13)
        if w2.dtype != w13.dtype:
            raise ValueError(f"moed: w13 is {w13.dtype} and w2 {w2.dtype}; one dtype for both")
        if w13.ndim != 3 or w2.ndim != 3:
            raise ValueError("moed: w13 must be [E, 2I or I, H] and w2 [E, H, I]")
        e, rows, h = w13.shape
        inter = rows // 2 if gated else rows
        if (gated and rows % 2) or w2.shape != (e, h, inter):
            raise ValueError(f"moed: w2 is {list(w2.shape)}; w13 {list(w13.shape)} "
                             f"({'gated' if gated else 'not gated'}) wants [{e}, {h}, {inter}]")
        shape = _lib.WeightsShape(num_experts=e, hidden_size=h, inter_size=inter, dtype=code,
                                  gated=1 if gated else 0)
        rc = lib.moed_weights_register(self._h, name.encode(), ctypes.byref(shape),
                                       w13.ctypes.data, w2.ctypes.data)
        _check(rc, self._c, f"moed: registering weights {name!r}")
        return Weights(self, rc, shape)

    def attach_weights(self, name):
        """Attach to the committed weight set `name` (no upload)."""
        shape = _lib.WeightsShape()
        rc = lib.moed_weights_attach(self._h, name.encode(), ctypes.byref(shape))
        _check(rc, self._c, f"moed: attaching weights {name!r}")
        return Weights(self, rc, shape)

    # ---- jobs ------------------------------------------------------------------------------

    def submit(self, job, keep=None):
        """Queue one job (a moed._lib.MoeJob whose buffers lie in the arena); returns its
        ticket, for wait() or moed.aio. `keep`: the arrays the job uses, held until its
        completion is reaped (whatever becomes of the caller: a timeout, a cancelled
        task), so that their arena memory is not reused while the daemon works on it.
        Raises MoedError when the ring is full."""
        job.user_data = self._next
        rc = lib.moed_submit_moe(self._h, ctypes.byref(job), 1)
        _check(rc, self._c, "moed: submitting a job")
        if rc == 0:
            raise MoedError(errno.EAGAIN, "moed: the submission ring is full; reap completions first")
        self._next += 1
        if keep is not None:
            self._keep[job.user_data] = keep
        return job.user_data

    def inflight(self):
        return lib.moed_inflight(self._h)

    def _reap(self, completions, n):
        if n:
            space, self._space = self._space, []
            for future in space:
                if not future.done():
                    future.set_result(None)
        for i in range(n):
            c = completions[i]
            self._keep.pop(c.user_data, None)
            result = (c.status, c.message.decode(errors="replace"), tuple(c.out_shape[:c.out_rank]))
            future = self._waiters.pop(c.user_data, None)
            if future is None:
                self._done[c.user_data] = result
            elif not future.done():
                future.set_result(result)

    def poll(self):
        """Reap whatever completions are there, without waiting."""
        batch = self._batch
        while True:
            n = _check(lib.moed_poll(self._h, batch, len(batch)), self._c, "moed: polling")
            self._reap(batch, n)
            if n < len(batch):
                return

    def wait(self, ticket, timeout=None):
        """Until job `ticket` completes: (status, message, output shape). timeout in s."""
        batch = self._batch
        ms = -1 if timeout is None else int(timeout * 1000)
        while ticket not in self._done:
            n = lib.moed_wait(self._h, batch, len(batch), ms)
            if n == -errno.ETIMEDOUT:
                raise TimeoutError(f"moed: job {ticket} not complete after {timeout} s")
            _check(n, self._c, "moed: waiting for a job")
            self._reap(batch, n)
        return self._done.pop(ticket)


def kwarg_type_of(value):
    """The wire type a Python value would travel as, where no signature says (None: none)."""
    if isinstance(value, (bool, np.bool_)):
        return _lib.KWARG_BOOL
    if isinstance(value, (int, np.integer)):
        return _lib.KWARG_INT64
    if isinstance(value, (float, np.floating)):
        return _lib.KWARG_DOUBLE
    if isinstance(value, str):
        return _lib.KWARG_STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return _lib.KWARG_INT64_ARRAY
    return None


class KwargsBlob:
    """fused_moe_kwargs encoded (libmoed's builder), copied into the arena for a job.
    items: (key, value, wire type): the type the backend's signature gives the key, so
    that 1 goes as a double where a double is wanted."""

    def __init__(self, client, items):
        b = lib.moed_kwargs_builder_new()
        if not b:
            raise MemoryError("moed: no memory for a kwargs builder")
        try:
            for key, value, kind in items:
                k = key.encode()
                if kind == _lib.KWARG_BOOL:
                    rc = lib.moed_kwargs_add_bool(b, k, bool(value))
                elif kind == _lib.KWARG_INT64:
                    rc = lib.moed_kwargs_add_int(b, k, int(value))
                elif kind == _lib.KWARG_DOUBLE:
                    rc = lib.moed_kwargs_add_double(b, k, float(value))
                elif kind == _lib.KWARG_STRING:
                    rc = lib.moed_kwargs_add_string(b, k, value.encode())
                elif kind == _lib.KWARG_INT64_ARRAY:
                    arr = (ctypes.c_int64 * len(value))(*[int(v) for v in value])
                    rc = lib.moed_kwargs_add_int_array(b, k, arr, len(value))
                else:
                    raise ValueError(f"moed: fused_moe_kwargs[{key!r}]: a {type(value).__name__} "
                                     "has no kwargs type (bool, int, float, str, list of int)")
                if rc < 0:
                    raise ValueError(f"moed: fused_moe_kwargs[{key!r}]: {os.strerror(-rc)}")
            size = ctypes.c_size_t()
            data = lib.moed_kwargs_data(b, ctypes.byref(size))
            self.array = client.empty((size.value,), np.uint8)
            ctypes.memmove(self.array.ctypes.data, data, size.value)
        finally:
            lib.moed_kwargs_builder_free(b)
