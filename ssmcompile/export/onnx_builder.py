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
