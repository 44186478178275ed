# SPDX-License-Identifier: MIT
"""The Python client and runner against running daemons (tests/test_python.sh starts
them): results against a numpy f64 reference on fresh random inputs, the runner's
contract (kwargs, no_combine withheld, empty input), asyncio with many jobs in flight
from one process and from several, and the errors a caller can cause."""
import asyncio
import ctypes
import errno
import math
import os
import struct
import subprocess
import sys
import unittest

import numpy as np

import moed
from moed import dtypes

SOCKET = os.environ.get("MOED_TEST_SOCKET", "")
WITHHELD = os.environ.get("MOED_TEST_SOCKET_WITHHELD", "")
SEED = int(os.environ.get("MOED_TEST_SEED", "0")) or int.from_bytes(os.urandom(4), "little")
TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "bf16": 1e-2}
GELU = np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))


def reference(x, w13, w2, ids, tw, *, gated, activation, no_combine, on_input, scale):
    """The MoE layer of ../shared/DESIGN.md in float64, token by token."""
    m_count, h = x.shape
    k_count, inter = ids.shape[1], w2.shape[2]
    out = np.zeros((m_count, k_count, h) if no_combine else (m_count, h))
    for m in range(m_count):
        for k in range(k_count):
            e, w = ids[m, k], float(tw[m, k])
            g = w13[e] @ (x[m] * (w if on_input else 1.0))
            a = g[:inter] if gated else g
            a = a / (1.0 + np.exp(-a)) if activation == "silu" else GELU(a)
            if gated:
                a = a * g[inter:]
            y = w2[e] @ a
            if no_combine:
                out[m, k] = y
            else:
                out[m] += scale * (1.0 if on_input else w) * y
    return out


def rel_error(got, want):
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300)


class Layer:
    """A random layer registered with the daemon, and its float64 values."""

    def __init__(self, client, rng, dtype, e, h, inter, gated=True):
        code = dtypes.NAMES[dtype]
        rows = 2 * inter if gated else inter
        w13 = rng.uniform(-1, 1, (e, rows, h)) * math.sqrt(3.0 / h)
        w2 = rng.uniform(-1, 1, (e, h, inter)) * math.sqrt(3.0 / inter)
        self.w13, self.w2 = dtypes.from_float(w13, code), dtypes.from_float(w2, code)
        self.w13_64, self.w2_64 = dtypes.to_float64(self.w13, code), dtypes.to_float64(self.w2, code)
        name = f"py-{dtype}-{e}-{h}-{inter}-{int(gated)}-{rng.integers(1 << 30)}"
        self.weights = client.register_weights(name, self.w13, self.w2, gated=gated)
        self.name = name
        self.dtype, self.code, self.gated, self.e, self.h = dtype, code, gated, e, h


def random_inputs(rng, layer, m, k):
    x = dtypes.from_float(rng.standard_normal((m, layer.h)), layer.code)
    logits = rng.standard_normal((m, layer.e))
    ids = np.argsort(-logits, axis=1)[:, :k].astype(np.int32)
    probs = np.exp(np.take_along_axis(logits, ids, 1))
    tw = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    return x, ids, tw


def check(test, layer, x, ids, tw, out, **flags):
    want = reference(dtypes.to_float64(x, layer.code), layer.w13_64, layer.w2_64, ids, tw,
                     gated=layer.gated, activation=flags.get("activation", "silu"),
                     no_combine=flags.get("no_combine", False),
                     on_input=flags.get("apply_router_weight_on_input", False),
                     scale=flags.get("routed_scaling_factor") or 1.0)
    got = dtypes.to_float64(np.asarray(out), layer.code)
    test.assertEqual(got.shape, want.shape)
    test.assertTrue(np.isfinite(got).all(), f"non-finite output (seed {SEED}, {flags})")
    err = rel_error(got, want)
    test.assertLess(err, TOLERANCE[layer.dtype], f"seed {SEED}, {layer.dtype}, {flags}")


def poison_arena(client, nbytes=1 << 20):
    """Fill the arena's free space at its start with NaN, so an output the daemon does
    not write fails (the next allocations reuse this memory)."""
    junk = client.empty((nbytes // 4,), np.float32)
    junk[...] = np.nan
    del junk


@unittest.skipUnless(SOCKET, "no daemon: run through tests/test_python.sh")
class ResultsTest(unittest.TestCase):
    def setUp(self):
        self.client = moed.Client(SOCKET)
        self.rng = np.random.default_rng(SEED)

    def tearDown(self):
        self.client.close()

    def test_random_jobs_against_reference(self):
        for dtype in ("f32", "bf16", "f16"):
            for gated in (True, False):
                e, h, inter = (int(self.rng.integers(2, 9)), int(self.rng.integers(3, 13)) * 8,
                               int(self.rng.integers(2, 9)) * 8 + int(self.rng.integers(0, 2)))
                layer = Layer(self.client, self.rng, dtype, e, h, inter, gated)
                runner = moed.MoeRunner(self.client, layer.weights)
                for trial in range(4):
                    m, k = int(self.rng.integers(1, 40)), int(self.rng.integers(1, min(e, 4) + 1))
                    flags = {"activation": ("silu", "gelu")[trial % 2],
                             "no_combine": trial >= 2,
                             "routed_scaling_factor": float(self.rng.uniform(0.5, 2.5)) if trial % 3 else None}
                    if trial == 3:
                        k, flags["apply_router_weight_on_input"] = 1, True
                    x, ids, tw = random_inputs(self.rng, layer, m, k)
                    poison_arena(self.client)
                    out = runner(x, ids, tw, **flags)
                    check(self, layer, x, ids, tw, out, **flags)

    def test_outputs_are_arena_views(self):
        layer = Layer(self.client, self.rng, "f32", 4, 32, 16)
        runner = moed.MoeRunner(self.client, layer.weights)
        x, ids, tw = random_inputs(self.rng, layer, 3, 2)
        out = runner(x, ids, tw)
        self.assertTrue(self.client.in_arena(out))
        xa = self.client.put(x)
        self.assertIs(self.client.put(xa), xa)  # already there: not copied

    def test_weights_shared_by_name(self):
        layer = Layer(self.client, self.rng, "f16", 5, 40, 24)
        with moed.Client(SOCKET) as other:
            attached = other.attach_weights(layer.name)
            self.assertEqual((attached.num_experts, attached.hidden_size, attached.inter_size, attached.gated),
                             (5, 40, 24, True))
            x, ids, tw = random_inputs(self.rng, layer, 6, 3)
            check(self, layer, x, ids, tw, moed.MoeRunner(other, attached)(x, ids, tw))
            with self.assertRaises(moed.MoedError) as caught:
                other.attach_weights(layer.name + "-none")
            self.assertEqual(caught.exception.code, errno.ENOENT)
            self.assertIn(layer.name + "-none", str(caught.exception))
        with self.assertRaisesRegex(ValueError, r"wants \[5, 40, 24\]"):
            self.client.register_weights("bad", layer.w13, layer.w2[:, :, :20])

    def test_jobs_keep_their_buffers(self):
        # A job submitted with keep= holds its arrays until its completion is reaped,
        # even where the caller drops them (a timeout, a cancelled task): fresh arrays
        # must not take their arena memory while the daemon still writes it.
        layer = Layer(self.client, self.rng, "f32", 8, 256, 128)
        x, ids, tw = random_inputs(self.rng, layer, 2048, 4)
        tickets = []
        for _ in range(3):
            xa, ia, wa = self.client.put(x), self.client.put(ids), self.client.put(tw)
            out = self.client.empty((2048, 256), np.float32)
            job = moed._lib.MoeJob(weights=layer.weights.handle, dtype=layer.code, num_tokens=2048, topk=4,
                                   hidden_size=256, hidden=xa.ctypes.data, topk_ids=ia.ctypes.data,
                                   topk_weights=wa.ctypes.data, output=out.ctypes.data)
            tickets.append(self.client.submit(job, keep=(xa, ia, wa, out)))
            del xa, ia, wa, out
        self.assertEqual(len(self.client._keep), 3)
        sentinels = [self.client.empty((1 << 18,), np.float32) for _ in range(32)]
        for s in sentinels:
            s[...] = 1234.5
        for t in tickets:
            self.assertEqual(self.client.wait(t)[0], 0)
        self.assertEqual(self.client._keep, {})
        for s in sentinels:
            self.assertTrue((s == 1234.5).all(), "a job wrote into memory given to another array")

    def test_bf16_conversion_against_reference(self):
        # Rounding to nearest, ties to even, worked out in float64 from the two bf16
        # neighbours of each value; halfway and near-halfway values included.
        bits = self.rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)
        bits[:64] = (bits[:64] & 0xFFFF0000) | 0x8000  # exact ties
        values = bits.view(np.float32)
        values = values[np.isfinite(values) & (np.abs(values) < 3e38)]
        got = moed.to_bf16(values)
        low = (values.view(np.uint32) & 0xFFFF0000).view(np.float32).astype(np.float64)
        # The spacing of bf16 values (8 significant bits) at this exponent; subnormals
        # (exponent field 0) are spaced as the smallest normals.
        exponent = (values.view(np.uint32) >> 23 & 0xFF).astype(np.int64)
        step = 2.0 ** (np.maximum(exponent, 1) - 127 - 7)
        up = low + np.sign(values) * step
        d_low, d_up = np.abs(values - low), np.abs(up - values)
        low_bits = (values.view(np.uint32) >> 16).astype(np.uint16)
        want = np.where((d_up < d_low) | ((d_up == d_low) & (low_bits & 1 == 1)), low_bits + 1, low_bits)
        np.testing.assert_array_equal(got, want.astype(np.uint16))
        np.testing.assert_array_equal(moed.from_bf16(got), (got.astype(np.uint32) << 16).view(np.float32))
        self.assertEqual(moed.to_bf16(np.array([np.nan]))[0], 0x7FC0)

    def test_arena_memory_returns(self):
        # Far more than the arena holds in all, one array at a time.
        for _ in range(64):
            a = self.client.empty((4 << 20,), np.uint8)
            a[0] = 1
            del a

    def test_torch_tensors(self):
        if dtypes.torch is None:
            self.skipTest("torch is not importable here")
        torch = dtypes.torch
        layer = Layer(self.client, self.rng, "bf16", 4, 32, 16)
        runner = moed.MoeRunner(self.client, layer.weights)
        x, ids, tw = random_inputs(self.rng, layer, 5, 2)
        xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        out = runner(xt, torch.from_numpy(ids), torch.from_numpy(tw))
        self.assertEqual(out.dtype, torch.bfloat16)
        check(self, layer, x, ids, tw, out.view(torch.int16).numpy().view(np.uint16))
        empty = runner(xt[:0], torch.from_numpy(ids[:0]), torch.from_numpy(tw[:0]), no_combine=True)
        self.assertEqual(tuple(empty.shape), (0, 2, 32))


@unittest.skipUnless(SOCKET and WITHHELD, "no daemons: run through tests/test_python.sh")
class ContractTest(unittest.TestCase):
    def setUp(self):
        self.client = moed.Client(SOCKET)
        self.rng = np.random.default_rng(SEED)
        self.layer = Layer(self.client, self.rng, "f32", 6, 48, 24)
        self.runner = moed.MoeRunner(self.client, self.layer.weights)
        self.inputs = random_inputs(self.rng, self.layer, 9, 2)

    def tearDown(self):
        self.client.close()

    def test_kwargs_forwarded_and_honoured(self):
        sig = self.client.signature
        self.assertIn("block_rows", sig.kwargs)
        for kwargs in ({"block_rows": 1}, {"block_rows": np.int64(5), "num_threads": 1}, {}, None):
            out = self.runner(*self.inputs, fused_moe_kwargs=kwargs)
            check(self, self.layer, *self.inputs, out)
        # What this side does not check, the daemon refuses, naming the key: so the
        # kwargs reach it.
        self.runner._check_kwargs = lambda kwargs: [(k, v, moed.client.kwarg_type_of(v)) for k, v in kwargs.items()]
        with self.assertRaisesRegex(ValueError, "not_a_kwarg"):
            self.runner(*self.inputs, fused_moe_kwargs={"not_a_kwarg": 3})
        with self.assertRaisesRegex(ValueError, "block_rows"):
            self.runner(*self.inputs, fused_moe_kwargs={"block_rows": 0})

    def test_bad_kwargs_name_the_key(self):
        cases = [({"bogus": 1}, "unknown key 'bogus'"),
                 ({"block_rows": "many"}, r"\['block_rows'\] must be int, not str"),
                 ({"block_rows": True}, r"\['block_rows'\] must be int, not bool"),
                 ({"num_threads": 0}, r"\['num_threads'\] = 0 is out of range"),
                 ({"block_rows": 1 << 40}, r"\['block_rows'\] = 1099511627776 is out of range")]
        for kwargs, words in cases:
            with self.assertRaisesRegex(ValueError, words):
                self.runner(*self.inputs, fused_moe_kwargs=kwargs)
        with self.assertRaisesRegex(ValueError, "must be a dict or None"):
            self.runner(*self.inputs, fused_moe_kwargs=[("block_rows", 1)])

    def test_no_combine_withheld(self):
        self.assertTrue(self.runner.supports_no_combine())
        with moed.Client(WITHHELD) as other:
            layer = Layer(other, self.rng, "f32", 6, 48, 24)
            runner = moed.MoeRunner(other, layer.weights)
            self.assertFalse(runner.supports_no_combine())
            x, ids, tw = random_inputs(self.rng, layer, 4, 2)
            for rows in (4, 0):  # refused before the empty shortcut too
                with self.assertRaisesRegex(NotImplementedError, "no_combine is not supported by moed backend 'cpu'"):
                    runner(x[:rows], ids[:rows], tw[:rows], no_combine=True)
            check(self, layer, x, ids, tw, runner(x, ids, tw))
            with self.assertRaisesRegex(NotImplementedError,
                                        "apply_router_weight_on_input is not supported by moed backend 'cpu'"):
                runner(x[:, :], ids[:, :1], tw[:, :1], apply_router_weight_on_input=True)

    def test_empty_input_shapes(self):
        x, ids, tw = (a[:0] for a in self.inputs)
        out = self.runner(x, ids, tw, no_combine=True)
        self.assertEqual(out.shape, (0, 2, 48))
        self.assertEqual(out.dtype, np.float32)
        self.assertEqual(self.runner(x, ids, tw).shape, (0, 48))

    def test_errors_a_caller_can_cause(self):
        x, ids, tw = self.inputs
        bad = ids.copy()
        bad[3, 1] = 6  # E = 6
        with self.assertRaisesRegex(ValueError, r"topk_ids\[3\]\[1\] = 6 is outside \[0, 6\)"):
            self.runner(x, bad, tw)
        wrapping = ids.astype(np.int64)
        wrapping[0, 0] = (1 << 32) + 1  # would be 1 as int32
        with self.assertRaisesRegex(ValueError, r"topk_ids holds 4294967297, outside \[0, 6\)"):
            self.runner(x, wrapping, tw)
        with self.assertRaisesRegex(ValueError, "topk_ids must be integers"):
            self.runner(x, ids.astype(np.float32), tw)
        with self.assertRaisesRegex(ValueError, r"hidden_states is \[9, 40\]"):
            self.runner(x[:, :40], ids, tw)
        with self.assertRaisesRegex(ValueError, "must both be"):
            self.runner(x, ids, tw[:, :1])
        with self.assertRaisesRegex(ValueError, "needs topk 1"):
            self.runner(x, ids, tw, apply_router_weight_on_input=True)
        with self.assertRaisesRegex(ValueError, "activation 'relu'"):
            self.runner(x, ids, tw, activation="relu")
        with self.assertRaisesRegex(TypeError, "float64 is not an I/O dtype"):
            self.runner(x.astype(np.float64), ids, tw)
        with self.assertRaisesRegex(ValueError, "routed_scaling_factor must be finite, not nan"):
            self.runner(x, ids, tw, routed_scaling_factor=float("nan"))
        with self.assertRaisesRegex(MemoryError, "the arena has no room for 1073741824 bytes"):
            self.client.empty((1 << 30,), np.uint8)
        with self.assertRaisesRegex(ValueError, "dtype 'fp8' is not one of f32, bf16, f16"):
            self.client.empty((4,), "fp8")
        w13, w2 = self.layer.w13, self.layer.w2
        with self.assertRaisesRegex(ValueError, "w13 is float32 and w2 float16; one dtype for both"):
            self.client.register_weights("bad", w13, w2.astype(np.float16))
        with self.assertRaisesRegex(ValueError, r"w13 must be \[E, 2I or I, H\]"):
            self.client.register_weights("bad", w13[0], w2)
        with self.assertRaisesRegex(moed.MoedError, "registering weights 'py-f32"):
            self.client.register_weights(self.layer.name, w13[:, :, :40], w2[:, :40, :])  # name taken
        released = self.client.attach_weights(self.layer.name)
        released.release()
        released.release()  # a second release does nothing
        with self.assertRaisesRegex(moed.MoedError, "submitting a job"):
            moed.MoeRunner(self.client, released)(x, ids, tw)
        closed = moed.Client(SOCKET)
        closed.close()
        with self.assertRaisesRegex(moed.MoedError, "the client is closed"):
            closed.empty((4,), np.float32)
        with self.assertRaisesRegex(moed.MoedError, "the client is closed"):
            moed.MoeRunner(closed, self.layer.weights)(x, ids, tw)
        with self.assertRaises(moed.MoedError) as caught:
            moed.Client(SOCKET + ".missing")
        self.assertEqual(caught.exception.code, errno.ENOENT)
        self.assertIn("cannot connect", str(caught.exception))


def decode_kwargs(blob):
    """The entries of a kwargs blob, read by the layout of include/moed/kwargs_abi.h:
    {key: (type, value)}."""
    data = bytes(blob)
    magic, version, count, size, _ = struct.unpack_from("<IHHII", data, 0)
    assert (magic, version, size) == (0x31574B4D, 1, len(data))
    at, out = 16, {}
    for _ in range(count):
        kind, key_len, _, value_len = struct.unpack_from("<BBHI", data, at)
        key = data[at + 8:at + 8 + key_len].decode()
        raw = data[at + 8 + key_len:at + 8 + key_len + value_len]
        value = {1: lambda b: bool(b[0]), 2: lambda b: struct.unpack("<q", b)[0],
                 3: lambda b: struct.unpack("<d", b)[0], 4: lambda b: b.decode(),
                 5: lambda b: list(struct.unpack(f"<{len(b) // 8}q", b))}[kind](raw)
        out[key] = (kind, value)
        at += (8 + key_len + value_len + 7) // 8 * 8
    return out


def fake_signature(client, specs):
    """A signature of the daemon's backend with `specs` (name, type, fields) as its kwargs."""
    wire = moed._lib.Signature.from_buffer_copy(ctypes.string_at(ctypes.addressof(
        moed._lib.lib.moed_signature(client._h).contents), ctypes.sizeof(moed._lib.Signature)))
    wire.kwarg_count = len(specs)
    for i, (name, kind, fields) in enumerate(specs):
        wire.kwargs[i] = moed._lib.KwargSpec(name=name.encode(), type=kind, **fields)
    return moed.Signature(wire)


@unittest.skipUnless(SOCKET, "no daemon: run through tests/test_python.sh")
class KwargsTest(unittest.TestCase):
    """Kwargs of every type, which the CPU backend's signature (two ints) does not have."""

    def setUp(self):
        self.client = moed.Client(SOCKET)
        rng = np.random.default_rng(SEED)
        self.runner = moed.MoeRunner(self.client, Layer(self.client, rng, "f32", 4, 16, 8).weights)
        L = moed._lib
        self.client._signature = fake_signature(self.client, [
            ("alpha", L.KWARG_DOUBLE, {"dmin": -1.0, "dmax": 4.0}),
            ("flag", L.KWARG_BOOL, {}),
            ("mode", L.KWARG_STRING, {"max_len": 8, "choices": b"fast,exact"}),
            ("label", L.KWARG_STRING, {"max_len": 4}),
            ("rows", L.KWARG_INT64_ARRAY, {"min": 0, "max": 9, "max_len": 3}),
        ])

    def tearDown(self):
        self.client.close()

    def test_values_travel_as_the_signature_types_them(self):
        items = self.runner._check_kwargs({"alpha": 1, "flag": np.True_, "mode": "exact", "rows": (0, 9)})
        got = decode_kwargs(moed.client.KwargsBlob(self.client, items).array)
        L = moed._lib
        self.assertEqual(got, {"alpha": (L.KWARG_DOUBLE, 1.0), "flag": (L.KWARG_BOOL, True),
                               "mode": (L.KWARG_STRING, "exact"), "rows": (L.KWARG_INT64_ARRAY, [0, 9])})

    def test_bad_values_name_the_key(self):
        cases = [({"alpha": 4.5}, r"\['alpha'\] = 4.5 is out of range \[-1.0, 4.0\]"),
                 ({"alpha": float("nan")}, r"\['alpha'\] = nan is out of range"),
                 ({"alpha": "x"}, r"\['alpha'\] must be float, not str"),
                 ({"flag": 1}, r"\['flag'\] must be bool, not int"),
                 ({"mode": "slow"}, r"\['mode'\] = 'slow' is not one of fast, exact"),
                 ({"label": "longer"}, r"\['label'\] is 6 bytes long, more than 4"),
                 ({"rows": [1, 2, 3, 4]}, r"\['rows'\] has 4 elements, more than 3"),
                 ({"rows": [1, 10]}, r"\['rows'\] has elements out of range \[0, 9\]"),
                 ({"rows": [1.5]}, r"\['rows'\] must be list of int, not list")]
        for kwargs, words in cases:
            with self.assertRaisesRegex(ValueError, words):
                self.runner._check_kwargs(kwargs)
        with self.assertRaisesRegex(ValueError, r"\['x'\]: a dict has no kwargs type"):
            moed.client.KwargsBlob(self.client, [("x", {}, moed.client.kwarg_type_of({}))])


async def many_in_flight(socket, seed, jobs):
    """`jobs` jobs in flight at once from one client, each checked; returns how many
    were right."""
    rng = np.random.default_rng(seed)
    with moed.Client(socket, sq_entries=256) as client:
        layer = Layer(client, rng, "bf16", 8, 64, 32)
        runner = moed.MoeRunner(client, layer.weights)
        inputs = [random_inputs(rng, layer, int(rng.integers(1, 24)), 2) for _ in range(jobs)]
        outs = await asyncio.gather(*(runner.run_async(*i) for i in inputs))
        test = unittest.TestCase()
        for i, out in zip(inputs, outs):
            check(test, layer, *i, out)
        return len(outs)


@unittest.skipUnless(SOCKET, "no daemon: run through tests/test_python.sh")
class AsyncTest(unittest.TestCase):
    def test_many_jobs_in_flight_one_process(self):
        self.assertEqual(asyncio.run(many_in_flight(SOCKET, SEED, 128)), 128)

    def test_many_jobs_in_flight_several_processes(self):
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", SOCKET, str(SEED + i), "64"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                   for i in range(1, 4)]
        for w in workers:
            out, _ = w.communicate(timeout=300)
            self.assertEqual(w.returncode, 0, out.decode(errors="replace"))
            self.assertIn(b"64 jobs right", out)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        n = asyncio.run(many_in_flight(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        print(f"{n} jobs right")
        sys.exit(0)
    print(f"MOED_TEST_SEED={SEED}")
    unittest.main(verbosity=2)
