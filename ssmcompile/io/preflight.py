"""Checks between a checkpoint's header and the architecture its spec describes.

The architecture is built on the meta device (shapes only: no memory, no init compute) and
compared key by key with the header's tensor entries before any tensor data is read or any
real model allocated, so a spec that names a 4 GB model in a 5 KB file is refused at once.
The loaded tensors are checked again against the real model (``check_weights``): the file
may have changed in between, and values (NaN, Inf) are only known then.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, safe_text
from .builders import ModelBuilder, call_builder
from .limits import COMPLEX_OF, FLOAT_DTYPES, OTHER_DTYPES, TensorEntry, check_dtypes

TORCH_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "I32": torch.int32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16,
    "F32": torch.float32, "F64": torch.float64, "C64": torch.complex64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}
_HEADER_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
_ALLOWED = {TORCH_DTYPES[d] for d in (*FLOAT_DTYPES, *COMPLEX_OF.values(), *OTHER_DTYPES)}


def entries_of(tensors: Mapping[str, Tensor]) -> dict[str, TensorEntry]:
    """What a header written from ``tensors`` would say (dtypes safetensors cannot store are
    named by torch's name, which no allow-list holds)."""
    return {name: TensorEntry(_HEADER_NAMES.get(t.dtype, str(t.dtype)), tuple(t.shape))
            for name, t in tensors.items()}


def meta_state(builder: ModelBuilder, spec: dict) -> dict[str, Tensor] | None:
    """The ``state_dict`` of ``builder``'s model for ``spec``, built on the meta device; None
    for a builder that is not ``meta_safe``."""
    if builder.build is None or not builder.meta_safe:
        return None
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        model = call_builder("cannot build model", builder.build, spec)
    if not isinstance(model, nn.Module):
        raise CheckpointError("the builder did not return an nn.Module")
    return model.state_dict()


def _kind(dtype: torch.dtype) -> str:
    return "complex" if dtype.is_complex else "float" if dtype.is_floating_point else str(dtype)


def check_entries(entries: Mapping[str, TensorEntry], expected: Mapping[str, Tensor]) -> None:
    """The header has exactly the architecture's tensors, shapes and kinds of dtype (floating
    precision may differ: the file's is kept); no tensor data needed."""
    for key in expected:
        if key not in entries:
            raise CheckpointError(f"missing tensor {key!r}")
    for key, entry in entries.items():
        name = safe_text(key, 80)
        if key not in expected:
            raise CheckpointError(f"unexpected tensor {name!r}")
        want = expected[key]
        if entry.shape != tuple(want.shape):
            raise CheckpointError(f"tensor {name!r} has shape {safe_text(entry.shape, 80)}, the "
                                  f"architecture needs {tuple(want.shape)}")
        have = TORCH_DTYPES[entry.dtype]
        if _kind(have) != _kind(want.dtype):
            raise CheckpointError(f"tensor {name!r} has dtype {have}, expected {want.dtype}")


def check_weights(tensors: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Same keys, shapes and kinds of dtype as ``expected`` (the rebuilt model), dtypes from
    the allow-list (one floating dtype), and finite."""
    for key, t in tensors.items():
        if t.dtype not in _ALLOWED:  # before isfinite, which float8 does not implement
            check_dtypes(entries_of({key: t}))
    check_dtypes(entries_of(tensors))
    check_entries(entries_of(tensors), expected)
    for key, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"tensor {safe_text(key, 80)!r} contains NaN or Inf")


__all__ = ["TORCH_DTYPES", "entries_of", "meta_state", "check_entries", "check_weights"]
