"""Our ONNX translations of the aten ops whose torchlib translation fails on an empty input.

torchlib writes ``repeat_interleave(x, r, dim)`` as Expand + ``Reshape(.., [.., -1])``: with a
batch or length of 0 onnxruntime cannot infer the -1 (it divides the element count by the
product of the other sizes) and the whole graph fails. Ours builds the target shape from
``Shape(x)`` with no -1 and ``allowzero=1``, so a zero-size input gives a zero-size output.

Only ops that occur in the exported program are overridden (``aten_overrides``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .onnx_builder import OuterGraph


def _rank(x) -> int | None:
    return len(x.shape) if x.shape is not None else None


def repeat_interleave_to_onnx(x, repeats, dim=None, output_size=None):
    """``aten::repeat_interleave.self_int``: each slice along ``dim`` repeated ``repeats`` times
    (``dim=None``: of the flattened ``x``). ``output_size`` is only a hint; it is ignored."""
    del output_size
    g = OuterGraph(x.dtype)
    rank = _rank(x)
    if dim is None:
        x, dim, rank = g("Reshape", x, g.ints(-1)), 0, 1
    if rank is None or not isinstance(repeats, int):
        raise NotImplementedError("repeat_interleave needs a known rank and an int repeat count")
    dim = dim % rank
    shape = g("Shape", x)

    def dims(start: int, end: int):
        return g("Slice", shape, g.ints(start), g.ints(end), g.ints(0))

    times = g.ints(repeats)
    expanded = g("Expand", g("Unsqueeze", x, g.ints(dim + 1)),
                 g.concat(dims(0, dim + 1), times, dims(dim + 1, rank)))
    merged = g.concat(dims(0, dim), g("Mul", dims(dim, dim + 1), times), dims(dim + 1, rank))
    return g("Reshape", expanded, merged, allowzero=1)


_OVERRIDES: dict[str, Callable] = {
    "aten::repeat_interleave.self_int": repeat_interleave_to_onnx,
}


def aten_overrides(graph: torch.fx.Graph) -> dict:
    """``custom_translation_table`` entries for the overridden aten ops ``graph`` calls."""
    table = {}
    for node in graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
            if target.name() in _OVERRIDES:
                table[target] = _OVERRIDES[target.name()]
    return table


__all__ = ["aten_overrides", "repeat_interleave_to_onnx"]
