# SPDX-License-Identifier: MIT
"""libmoed through ctypes: the C structures of moed/moed.h and the functions' types.

The library is $MOED_LIBRARY when set (a path), else libmoed.so.0 in the libdir the
package was installed with, else libmoed.so.0 on the loader's path. No compiled extension: the layouts below follow
the C headers field by field, and _check_layouts() compares the sizes the headers pin.
"""
import ctypes
import os

MSG_SIZE = 256
BACKEND_NAME_MAX = 32
KWARG_KEY_MAX = 64
SIG_MAX_KWARGS = 32
SIG_CHOICES_MAX = 160

# enum moed_dtype, enum moed_activation, MOED_CAP_*, enum moed_kwarg_type
DTYPE_F32, DTYPE_BF16, DTYPE_F16 = 0, 1, 2
ACT_SILU, ACT_GELU = 0, 1
ACTIVATIONS = {"silu": ACT_SILU, "gelu": ACT_GELU}
CAP_NO_COMBINE = 1 << 0
CAP_ROUTER_WEIGHT_ON_INPUT = 1 << 1
CAP_GATED = 1 << 2
CAP_NOT_GATED = 1 << 3
KWARG_BOOL, KWARG_INT64, KWARG_DOUBLE, KWARG_STRING, KWARG_INT64_ARRAY = 1, 2, 3, 4, 5


class ConnectOptions(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("sq_entries", ctypes.c_uint32),
        ("arena_size", ctypes.c_uint64),
        ("spin_us", ctypes.c_uint32),
        ("error", ctypes.c_char_p),
        ("error_len", ctypes.c_size_t),
    ]


class KwargSpec(ctypes.Structure):  # struct moed_kwarg_spec_wire
    _fields_ = [
        ("name", ctypes.c_char * (KWARG_KEY_MAX + 8)),
        ("type", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 7),
        ("min", ctypes.c_int64),
        ("max", ctypes.c_int64),
        ("dmin", ctypes.c_double),
        ("dmax", ctypes.c_double),
        ("max_len", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32),
        ("choices", ctypes.c_char * SIG_CHOICES_MAX),
        ("help", ctypes.c_char * 96),
    ]


class Signature(ctypes.Structure):  # struct moed_signature
    _fields_ = [
        ("backend", ctypes.c_char * BACKEND_NAME_MAX),
        ("caps", ctypes.c_uint32),
        ("dtypes", ctypes.c_uint32),
        ("activations", ctypes.c_uint32),
        ("kwarg_count", ctypes.c_uint32),
        ("kwargs", KwargSpec * SIG_MAX_KWARGS),
    ]


class WeightsShape(ctypes.Structure):  # struct moed_weights_shape
    _fields_ = [
        ("num_experts", ctypes.c_uint32),
        ("hidden_size", ctypes.c_uint32),
        ("inter_size", ctypes.c_uint32),
        ("dtype", ctypes.c_uint8),
        ("gated", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 2),
    ]


class MoeJob(ctypes.Structure):  # struct moed_moe_job
    _fields_ = [
        ("user_data", ctypes.c_uint64),
        ("weights", ctypes.c_uint32),
        ("dtype", ctypes.c_uint8),
        ("activation", ctypes.c_uint8),
        ("no_combine", ctypes.c_bool),
        ("router_weight_on_input", ctypes.c_bool),
        ("num_tokens", ctypes.c_uint32),
        ("topk", ctypes.c_uint32),
        ("hidden_size", ctypes.c_uint32),
        ("routed_scaling_factor", ctypes.c_float),
        ("hidden", ctypes.c_void_p),
        ("topk_ids", ctypes.c_void_p),
        ("topk_weights", ctypes.c_void_p),
        ("output", ctypes.c_void_p),
        ("kwargs", ctypes.c_void_p),
        ("kwargs_size", ctypes.c_size_t),
    ]


class Completion(ctypes.Structure):  # struct moed_completion
    _fields_ = [
        ("user_data", ctypes.c_uint64),
        ("status", ctypes.c_int32),
        ("out_rank", ctypes.c_uint32),
        ("out_shape", ctypes.c_uint32 * 3),
        ("queue_ns", ctypes.c_uint64),
        ("run_ns", ctypes.c_uint64),
        ("message", ctypes.c_char * MSG_SIZE),
    ]


def _check_layouts():
    pinned = {KwargSpec: 376, WeightsShape: 16}
    for struct, size in pinned.items():
        if ctypes.sizeof(struct) != size:
            raise ImportError(f"moed: {struct.__name__} is {ctypes.sizeof(struct)} bytes here, "
                              f"{size} in moed/proto.h")


_P = ctypes.c_void_p
_FUNCTIONS = {
    # name: (restype, argtypes)
    "moed_version": (ctypes.c_char_p, []),
    "moed_connect": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ConnectOptions), ctypes.POINTER(_P)]),
    "moed_close": (None, [_P]),
    "moed_client_error": (ctypes.c_char_p, [_P]),
    "moed_signature": (ctypes.POINTER(Signature), [_P]),
    "moed_arena_alloc": (_P, [_P, ctypes.c_size_t]),
    "moed_arena_free": (None, [_P, _P]),
    "moed_arena_base": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "moed_weights_register": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(WeightsShape), _P, _P]),
    "moed_weights_attach": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(WeightsShape)]),
    "moed_weights_release": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "moed_submit_moe": (ctypes.c_int, [_P, ctypes.POINTER(MoeJob), ctypes.c_uint]),
    "moed_poll": (ctypes.c_int, [_P, ctypes.POINTER(Completion), ctypes.c_uint]),
    "moed_wait": (ctypes.c_int, [_P, ctypes.POINTER(Completion), ctypes.c_uint, ctypes.c_int]),
    "moed_inflight": (ctypes.c_uint, [_P]),
    "moed_completion_fd": (ctypes.c_int, [_P]),
    "moed_arm_wakeup": (ctypes.c_int, [_P]),
    "moed_kwargs_builder_new": (_P, []),
    "moed_kwargs_builder_free": (None, [_P]),
    "moed_kwargs_add_bool": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_bool]),
    "moed_kwargs_add_int": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int64]),
    "moed_kwargs_add_double": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_double]),
    "moed_kwargs_add_string": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p]),
    "moed_kwargs_add_int_array": (ctypes.c_int,
                                  [_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_size_t]),
    "moed_kwargs_data": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
}


def _load():
    paths = [os.environ.get("MOED_LIBRARY")]
    try:
        from ._paths import LIBDIR  # written at build time: where make install puts libmoed
        paths.append(os.path.join(LIBDIR, "libmoed.so.0"))
    except ImportError:  # the source tree's package (tests set MOED_LIBRARY)
        pass
    paths.append("libmoed.so.0")
    tried = []
    for path in filter(None, paths):
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            tried.append(str(e))
    else:
        raise ImportError(f"moed: cannot load libmoed ({'; '.join(tried)}); install it or set "
                          "MOED_LIBRARY to the path of libmoed.so.0")
    for name, (restype, argtypes) in _FUNCTIONS.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


_check_layouts()
lib = _load()
