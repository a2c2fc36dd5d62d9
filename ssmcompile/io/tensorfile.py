"""Validated safetensors files: the one place bytes from disk become tensors.

The header is parsed and checked here (sizes, JSON, dtypes, offsets that tile the data buffer)
before safetensors sees it, so every malformed file gives a specific one-line CheckpointError
instead of a library error. Nothing here can execute code: safetensors holds only raw arrays.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from ..errors import CheckpointError, safe_text
from .atomic import check_output_path, write_bytes_atomic
from .limits import MAX_DIM, MAX_RANK, TensorEntry

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "I64": 8, "U64": 8, "F64": 8,
}


def one_line(text: object) -> str:
    """A message squeezed onto one line (library errors can span several)."""
    return " ".join(str(text).split())


def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{safe_text(path, 200)}: {safe_text(problem)}")


def save_tensors_atomic(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, str]
) -> Path:
    """Write ``tensors`` (CPU copies, contiguous) and str→str ``metadata`` atomically.

    Raises CheckpointError for non-str metadata, non-tensor values, dtypes safetensors cannot
    store (complex128) and unwritable destinations; nothing is written then.
    """
    out = check_output_path(path)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError("safetensors metadata must map str to str")
    prepared: dict[str, Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, Tensor):
            raise CheckpointError(f"{name} is a {type(t).__name__}, not a tensor")
        if t.dtype == torch.complex128:
            raise CheckpointError(f"{name} is complex128, which safetensors cannot store")
        # clone: safetensors refuses tensors that share storage (tied weights, views)
        prepared[name] = t.detach().to("cpu").contiguous().clone()
    try:
        data = safetensors.torch.save(prepared, metadata=dict(metadata))
    except Exception as err:  # the library's errors are not ours; keep them one line
        raise CheckpointError(f"cannot serialise tensors: {one_line(err)}") from None
    return write_bytes_atomic(out, data)


def _open_checked(path: str | os.PathLike[str]) -> tuple[Path, int]:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no such file: {p}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a checkpoint file")
    size = p.stat().st_size
    if size == 0:
        raise _fail(p, "empty file")
    if size < 8:
        raise _fail(p, f"not a safetensors file (only {size} bytes)")
    return p, size


Header = tuple[dict[str, TensorEntry], dict[str, str]]


def _parse_header(p: Path, raw: bytes, data_len: int) -> Header:
    """Check the header JSON against a data buffer of ``data_len`` bytes; returns the tensor
    entries and the metadata."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail(p, "not a safetensors file (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise _fail(p, "not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _fail(p, "corrupt safetensors metadata (must map str to str)")
    spans = []
    entries: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _fail(p, f"corrupt entry for tensor {safe_text(name, 80)!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        ok_shape = (isinstance(shape, list) and len(shape) <= MAX_RANK
                    and all(_nonneg_int(s) and s <= MAX_DIM for s in shape))
        ok_offsets = (isinstance(offsets, list) and len(offsets) == 2
                      and all(_nonneg_int(o) for o in offsets) and offsets[0] <= offsets[1])
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES or not ok_shape or not ok_offsets:
            raise _fail(p, f"corrupt entry for tensor {safe_text(name, 80)!r}")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise _fail(p, f"tensor {safe_text(name, 80)!r}: byte range does not match its "
                        "shape and dtype")
        spans.append((offsets[0], offsets[1], name))
        entries[name] = TensorEntry(dtype, tuple(shape))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise _fail(p, f"tensor {safe_text(name, 80)!r}: data overlaps or leaves a gap")
        end = stop
    if end > data_len:
        raise _fail(p, f"truncated file: tensor data needs {end} bytes, only {data_len} present")
    if end < data_len:
        raise _fail(p, f"corrupt file: {data_len - end} bytes after the last tensor")
    return entries, metadata


def _nonneg_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _header_length(p: Path, first8: bytes, size: int) -> int:
    (n,) = struct.unpack("<Q", first8)
    if n == 0 or n > MAX_HEADER_BYTES or n > size - 8:
        raise _fail(p, f"not a safetensors file or truncated (header length {n}, file {size} B)")
    return n


def read_header(path: str | os.PathLike[str]) -> Header:
    """``(tensor entries, str→str metadata)`` after checking the whole header; no tensor data
    is read, so this costs the header's size whatever the file claims."""
    p, size = _open_checked(path)
    with open(p, "rb") as f:
        n = _header_length(p, f.read(8), size)
        raw = f.read(n)
    return _parse_header(p, raw, size - 8 - n)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The file's str→str metadata after checking the whole header; tensors are not read."""
    return read_header(path)[1]


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` from a safetensors file, every file-level problem a
    CheckpointError: missing, directory, empty, truncated, corrupt header, not safetensors."""
    p, size = _open_checked(path)
    data = p.read_bytes()
    n = _header_length(p, data[:8], len(data))
    _, metadata = _parse_header(p, data[8 : 8 + n], len(data) - 8 - n)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as err:  # anything the pre-checks missed is still a bad file
        raise _fail(p, f"corrupt safetensors file ({err})") from None
    return dict(tensors), metadata
