# SPDX-License-Identifier: MIT
"""moed's Python client: ctypes over libmoed, numpy arrays in the shared arena.

    import moed
    with moed.Client() as client:                       # $MOED_SOCKET or the default
        weights = client.register_weights("layer0", w13, w2)
        runner = moed.MoeRunner(client, weights)
        out = runner(hidden_states, topk_ids, topk_weights)
"""
from ._lib import lib as _lib_handle
from .client import Client, KwargSpec, MoedError, Signature, Weights
from .dtypes import from_bf16, to_bf16
from .runner import MoeRunner
from .aio import completion

__all__ = ["Client", "KwargSpec", "MoedError", "MoeRunner", "Signature", "Weights", "completion",
           "from_bf16", "to_bf16", "version"]


def version():
    """libmoed's version."""
    return _lib_handle.moed_version().decode()
