"""Bounds on what a checkpoint may ask for, checked before anything is built or allocated.

A checkpoint is a small file that names sizes; without bounds an 85 KB file could ask for a
4 GB model or a replay costing minutes. Three kinds of bound, all cheap:

- absolute caps (``MAX_*``): no spec, history or string is larger than any real model needs;
- bounds from the file itself (:class:`FileBudget`, read from the safetensors header without
  reading tensor data): every size a spec names is a dimension of some tensor, so it cannot
  exceed the largest tensor's element count, and every SSM block owns at least one tensor;
- one floating dtype per model, from an allow-list (:func:`check_dtypes`).

The exact check (the spec's architecture built on the meta device has the file's keys and
shapes) follows in ``checkpoint``; these bounds make that meta build cheap, so every file
under 1 MB is answered in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import CheckpointError, safe_text

MAX_BLOCKS = 1024  # SSM blocks / layers in one model; the deepest real ones have ~100
MAX_HISTORY = 65_536  # reduction events: 64 per block at MAX_BLOCKS
MAX_INT = 1 << 53  # any int in a spec: past this floats lose it and C++ sizes overflow
MAX_DEPTH = 16  # nesting of a spec's JSON
MAX_ITEMS = 1 << 16  # values in one spec, all containers together
MAX_NAME = 256  # builder, block, version and extra key names
MAX_TEXT = 1 << 20  # an extra value (the trainer stores its config there) or a spec string
MAX_RANK = 16  # dimensions of one tensor
MAX_DIM = 1 << 48  # one dimension of one tensor (a zero-size tensor could claim any)
MAX_PROBE_ELEMENTS = 1 << 26  # probe length x per-step width: 256 MiB of float32 per copy
MAX_PROBE_LENGTH = 1 << 20

# Floating dtypes a model may hold: the kernels compute in float32/float64 only (float16 and
# bfloat16 load but every op refuses them), and float8 cannot even be checked for NaN.
FLOAT_DTYPES = ("F32", "F64")
COMPLEX_OF = {"F32": "C64"}  # complex parameters must match the model's real precision
# Integer buffers the models have (BatchNorm's counter) and small masks; exact dtype checked
# against the architecture later.
OTHER_DTYPES = ("I64", "I32", "I16", "I8", "U8", "BOOL")
TORCH_NAMES = {"F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
               "F8_E5M2": "float8_e5m2", "F32": "float32", "F64": "float64",
               "C64": "complex64", "U16": "uint16", "U32": "uint32", "U64": "uint64"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it (no data read)."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class FileBudget:
    """What the tensors in a file allow a spec to name."""

    tensors: int  # how many
    elements: int  # all tensors together
    largest: int  # elements of the largest one
    names: frozenset[str]

    @classmethod
    def from_entries(cls, entries: Mapping[str, TensorEntry]) -> FileBudget:
        counts = [e.numel for e in entries.values()]
        return cls(len(counts), sum(counts), max(counts, default=0), frozenset(entries))

    def check_sizes(self, sizes: Mapping[str, int], what: str) -> None:
        """Each named size is some tensor's dimension, so at most the largest tensor."""
        for name, v in sizes.items():
            if v > self.largest:
                raise CheckpointError(f"{what}: {name} = {v} but the largest tensor in the "
                                      f"file has {self.largest} elements")

    def check_blocks(self, blocks: Iterable[str], what: str) -> None:
        """Every SSM block owns at least one tensor (its state dimension is stored)."""
        prefixes = {name.rsplit(".", 1)[0] for name in self.names}
        prefixes |= {p for name in prefixes for p in _parents(name)}
        for block in blocks:
            if block not in prefixes:
                raise CheckpointError(f"{what}: block {safe_text(block, 80)!r} has no tensors "
                                      "in the file")


def _parents(name: str) -> Iterable[str]:
    while "." in name:
        name = name.rsplit(".", 1)[0]
        yield name


def check_dtypes(entries: Mapping[str, TensorEntry]) -> str | None:
    """The model's one floating dtype (None if it has none); CheckpointError naming the first
    tensor whose dtype is not allowed or differs from the others'."""
    floats: dict[str, list[str]] = {}
    for name, entry in entries.items():
        if entry.dtype in FLOAT_DTYPES:
            floats.setdefault(entry.dtype, []).append(name)
        elif entry.dtype not in OTHER_DTYPES and entry.dtype not in COMPLEX_OF.values():
            torch_name = TORCH_NAMES.get(entry.dtype, entry.dtype)
            raise CheckpointError(
                f"tensor {safe_text(name, 80)!r} has dtype {torch_name}, which ssmcompile does "
                f"not load (models hold float32 or float64; convert with model.float())")
    if len(floats) > 1:
        main = max(floats, key=lambda d: (len(floats[d]), d))
        odd = min(d for d in floats if d != main)
        raise CheckpointError(
            f"tensor {safe_text(sorted(floats[odd])[0], 80)!r} is {TORCH_NAMES[odd]} but the "
            f"model's other floating tensors are {TORCH_NAMES[main]} (a checkpoint holds one "
            "floating dtype)")
    dtype = next(iter(floats), None)
    for name, entry in entries.items():
        if entry.dtype in COMPLEX_OF.values() and COMPLEX_OF.get(dtype or "F32") != entry.dtype:
            raise CheckpointError(f"tensor {safe_text(name, 80)!r} is complex64 in a "
                                  f"{TORCH_NAMES[dtype or 'F32']} model")
    return dtype


def check_json(value: object, what: str) -> None:
    """A spec's JSON: bounded nesting, count, string lengths and int magnitudes (iterative,
    so deep nesting cannot exhaust the stack)."""
    stack = [(value, 0)]
    seen = 0
    while stack:
        v, depth = stack.pop()
        seen += 1
        if seen > MAX_ITEMS:
            raise CheckpointError(f"{what} has more than {MAX_ITEMS} values")
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{what} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise CheckpointError(f"{what} holds a string of {len(v)} characters")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
            raise CheckpointError(f"{what} holds the number {safe_text(v, 40)}, larger than "
                                  f"{MAX_INT}")
        if isinstance(v, dict):
            for k, item in v.items():
                check_name(k, f"{what} key")
                stack.append((item, depth + 1))
        elif isinstance(v, list):
            stack.extend((item, depth + 1) for item in v)


def check_name(text: object, what: str, limit: int = MAX_NAME) -> None:
    if isinstance(text, str) and len(text) > limit:
        raise CheckpointError(f"{what} is {len(text)} characters long (at most {limit}): "
                              f"{safe_text(text, 60)!r}")


def check_block_count(dims: Sequence[object] | Mapping[str, object], what: str) -> None:
    if len(dims) > MAX_BLOCKS:
        raise CheckpointError(f"{what} has {len(dims)} blocks (at most {MAX_BLOCKS})")


def check_probe(length: int, width: int) -> None:
    """A probe of ``length`` steps through a model ``width`` values wide per step (input,
    block widths and states together) stays within a few hundred MB."""
    if length > MAX_PROBE_LENGTH or length * max(width, 1) > MAX_PROBE_ELEMENTS:
        most = min(MAX_PROBE_LENGTH, MAX_PROBE_ELEMENTS // max(width, 1))
        raise CheckpointError(f"probe length {length} is too long for this model (at most "
                              f"{most})")


__all__ = ["MAX_BLOCKS", "MAX_HISTORY", "MAX_NAME", "MAX_TEXT", "FLOAT_DTYPES", "TensorEntry",
           "FileBudget", "check_dtypes", "check_json", "check_name", "check_block_count",
           "check_probe"]
