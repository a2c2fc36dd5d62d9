"""Recording ONNX nodes inside a ``custom_translation_table`` function: outer graph and Scan bodies.

Why the exporter's private ``call_op``: an ``onnxscript`` ``op.Scan(...)`` call inside a
translation returned a single output (REFERENCE.md), while the exporter's own higher-order-op
helper (``torch.onnx._internal.exporter._torchlib.ops.hop.call_op``, which it uses for
``torch.ops.higher_order.scan``) records a node with any number of outputs and graph
attributes. It is private API pinned to torch 2.13 behaviour by
``tests/export/test_export_scan_translation.py``; :func:`exporter_helper` fails with one clear
``ExportError`` if a torch upgrade removes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

from .result import ExportError

# Unique names for body-graph values: several Scan bodies live in one model.
_body_ids = itertools.count()


def exporter_helper() -> Callable:
    """The exporter's node-recording helper ``call_op(op_type, *inputs, _num_outputs, **attrs)``."""
    try:
        from torch.onnx._internal.exporter._torchlib.ops.hop import call_op
    except ImportError as err:  # a torch upgrade moved the private helper
        raise ExportError(
            f"torch {torch.__version__} lacks the ONNX exporter helper the Scan translation "
            f"needs (tested with torch 2.13): {err}"
        ) from None
    return call_op


class OuterGraph:
    """Records nodes of the graph being exported; ``g("Op", *inputs, **attrs)`` → first output.

    ``dtype``: the ``onnx_ir`` data type of the scan (constants are made in it).
    """

    def __init__(self, dtype) -> None:
        self.call_op = exporter_helper()
        self.np_dtype = dtype.numpy()

    def __call__(self, op_type: str, *inputs, **attrs):
        return self.call_op(op_type, *inputs, **attrs)[0]

    def outputs(self, op_type: str, *inputs, count: int, **attrs) -> list:
        return list(self.call_op(op_type, *inputs, _num_outputs=count, **attrs))

    def split(self, x, axis: int, parts: int) -> list:
        """``x`` cut into ``parts`` equal pieces along ``axis``."""
        return self.outputs("Split", x, count=parts, axis=axis, num_outputs=parts)

    def ints(self, *values: int):
        """A 1-D int64 constant."""
        return self("Constant", value_ints=list(values))

    def constant(self, array: np.ndarray):
        import onnx_ir as ir

        return self("Constant", value=ir.tensor(array))

    def dims(self, x, *axes: int):
        """``x``'s sizes along ``axes`` as a 1-D int64 tensor."""
        return self("Gather", self("Shape", x), self.ints(*axes), axis=0)

    def concat(self, *parts, axis: int = 0):
        return self("Concat", *parts, axis=axis)

    def fill(self, shape, value: float):
        """A tensor of ``shape`` (a 1-D int64 Value) filled with ``value`` in the scan's dtype."""
        import onnx_ir as ir

        return self("ConstantOfShape", shape, value=ir.tensor(np.full(1, value, self.np_dtype)))


class BodyBuilder:
    """Collects the nodes of one Scan body graph; values from the outer scope may be used as
    inputs directly (ONNX subgraphs see their enclosing graph's values)."""

    def __init__(self, dtype) -> None:
        import onnx_ir

        self.ir = onnx_ir
        self.dtype = dtype
        self.tag = f"scan{next(_body_ids)}"
        self.nodes: list = []

    def input(self, name: str, shape: list[int | None]):
        ir = self.ir
        return ir.Value(
            name=f"{self.tag}_{name}", type=ir.TensorType(self.dtype), shape=ir.Shape(shape)
        )

    def __call__(self, op_type: str, *inputs):
        node = self.ir.Node("", op_type, inputs=list(inputs), num_outputs=1)
        # Explicit unique names: auto-generated ones ("val_0") can collide with the outer graph's.
        node.outputs[0].name = f"{self.tag}_v{len(self.nodes)}"
        self.nodes.append(node)
        return node.outputs[0]

    def graph(self, inputs: list, outputs: list, name: str):
        return self.ir.Graph(inputs, outputs, nodes=self.nodes, name=f"{self.tag}_{name}")


def complex_mul(g, ar, ai, br, bi):
    """(ar + i·ai)(br + i·bi) as (real, imag) with ``g`` an OuterGraph or a BodyBuilder."""
    return (
        g("Sub", g("Mul", ar, br), g("Mul", ai, bi)),
        g("Add", g("Mul", ar, bi), g("Mul", ai, br)),
    )



def at_least_one_step(g: OuterGraph, x, rank: int = 3):
    """``x`` (batch, length, ...) of ``rank`` axes, zero-padded at the end to batch ≥ 1 and
    length ≥ 1.

    onnxruntime's ``Scan`` kills the process with SIGFPE (an integer division by zero, no
    exception to catch) when a scanned input has batch 0 or length 0, and refuses a
    ``Reshape`` with a -1 next to a 0. Padding keeps those sizes ≥ 1 and :func:`crop_steps`
    cuts the result back, so an empty input gives an empty output. Padding at the end changes
    no real output: the scans are causal and their batch rows independent.
    """
    one = g.ints(1)
    grow = [g("Sub", g("Max", size, one), size) for size in (g.dims(x, 0), g.dims(x, 1))]
    pads = [g.ints(*([0] * rank)), *grow]
    if rank > 2:
        pads.append(g.ints(*([0] * (rank - 2))))
    return g("Pad", x, g.concat(*pads))


def crop_steps(g: OuterGraph, y, like):
    """``y`` cut to the batch and length of ``like`` (both (batch, length, ...))."""
    return g("Slice", y, g.ints(0, 0), g.dims(like, 0, 1), g.ints(0, 1))
