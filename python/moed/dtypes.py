# SPDX-License-Identifier: MIT
"""The I/O dtypes and their numpy forms.

numpy has no bfloat16: a bf16 tensor is held as uint16 bit patterns (the top half of an
f32), and to_bf16 / from_bf16 convert. Torch tensors (CPU) are taken and given back as
torch tensors when torch is importable; torch is never required.
"""
import numpy as np

from . import _lib

NAMES = {"f32": _lib.DTYPE_F32, "bf16": _lib.DTYPE_BF16, "f16": _lib.DTYPE_F16}
_NUMPY = {_lib.DTYPE_F32: np.dtype(np.float32), _lib.DTYPE_BF16: np.dtype(np.uint16),
          _lib.DTYPE_F16: np.dtype(np.float16)}


def numpy_dtype(code):
    """The numpy dtype holding moed dtype `code` (bf16: uint16)."""
    return _NUMPY[code]


def code_of(array):
    """The moed dtype of a numpy array: float32, float16, or uint16 (bf16 bits)."""
    for code, dt in _NUMPY.items():
        if array.dtype == dt:
            return code
    raise TypeError(f"moed: dtype {array.dtype} is not an I/O dtype (float32, float16, or "
                    "uint16 holding bfloat16; see moed.to_bf16)")


def to_bf16(values):
    """float values -> bf16 bit patterns (uint16), rounded to nearest even."""
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    bits = f32.view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))
    out = (rounded >> 16).astype(np.uint16)
    out[np.isnan(f32)] = 0x7FC0  # the sum above could carry a NaN's payload into inf
    return out


def from_bf16(bits):
    """bf16 bit patterns (uint16) -> float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float64(array, code):
    """An I/O array's values as float64 (for references and checks)."""
    if code == _lib.DTYPE_BF16:
        return from_bf16(array).astype(np.float64)
    return np.asarray(array, dtype=np.float64)


def from_float(values, code):
    """float values -> the numpy form of moed dtype `code`."""
    if code == _lib.DTYPE_BF16:
        return to_bf16(values)
    return np.asarray(values, dtype=_NUMPY[code])


try:  # torch is optional: CPU tensors in and out where it is there
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

_TORCH = {}
if torch is not None:
    _TORCH = {torch.float32: _lib.DTYPE_F32, torch.bfloat16: _lib.DTYPE_BF16,
              torch.float16: _lib.DTYPE_F16}


def is_tensor(x):
    return torch is not None and isinstance(x, torch.Tensor)


def tensor_to_numpy(t, what):
    """A CPU torch tensor as a numpy array (bf16 as uint16 bits), sharing its memory."""
    if t.device.type != "cpu":
        raise ValueError(f"moed: {what} is on {t.device}; only CPU tensors are taken so far")
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def numpy_to_tensor(a, code):
    """An arena array back as a torch tensor of moed dtype `code`, sharing its memory."""
    if code == _lib.DTYPE_BF16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)
