"""Translations of our scan custom ops to one ONNX ``Scan`` node each (never unrolled over time).

``torch.onnx.export(..., dynamo=True, custom_translation_table=scan_translation_table(ops))``
calls these functions with ``onnx_ir`` values instead of tensors. Each one emits:

    zeros (batch, n)  ──►  Scan(body, num_scan_inputs=k, scan_input_axes=[1]*k,
                                 scan_output_axes=[1]*k)  ──►  x (batch, length, n)

with a body graph holding ONE time step; λ (or Aᵀ) is read from the outer scope, so the
graph's node count does not depend on the sequence length.

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
from collections.abc import Callable, Iterable

import torch

from .result import ExportError

DIAGONAL_SCAN = "ssmcompile::diagonal_scan"
DENSE_SCAN = "ssmcompile::dense_scan"

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


def _ir():
    import onnx_ir

    return onnx_ir


def _zero_state(bu):
    """(batch, n) zeros shaped like one time slice of ``bu`` (batch, length, n), same dtype."""
    import numpy as np

    ir, call_op = _ir(), exporter_helper()
    shape = call_op("Shape", bu)[0]
    keep = call_op("Constant", value_ints=[0, 2])[0]
    dims = call_op("Gather", shape, keep, axis=0)[0]
    zero = ir.tensor(np.zeros(1, dtype=bu.dtype.numpy()))
    return call_op("ConstantOfShape", dims, value=zero)[0]


class _BodyBuilder:
    """Collects the nodes of one Scan body graph (one time step)."""

    def __init__(self, dtype, n) -> None:
        self.ir = _ir()
        self.dtype, self.n = dtype, n
        self.tag = f"scan{next(_body_ids)}"
        self.nodes: list = []

    def input(self, name: str):
        ir = self.ir
        return ir.Value(
            name=f"{self.tag}_{name}",
            type=ir.TensorType(self.dtype),
            shape=ir.Shape([None, self.n]),
        )

    def __call__(self, op_type: str, *inputs):
        node = self.ir.Node("", op_type, inputs=list(inputs), num_outputs=1)
        # Explicit unique names: auto-generated ones ("val_0") can collide with the outer graph's.
        node.outputs[0].name = f"{self.tag}_v{len(self.nodes)}"
        self.nodes.append(node)
        return node.outputs[0]

    def graph(self, inputs: list, outputs: list, name: str):
        return self.ir.Graph(inputs, outputs, nodes=self.nodes, name=f"{self.tag}_{name}")


def _state_width(bu):
    dim = bu.shape[2] if bu.shape is not None and len(bu.shape) == 3 else None
    return dim if isinstance(dim, int) else None


def diagonal_scan_to_onnx(lam_re, lam_im, bu_re, bu_im):
    """ONNX for ``ssmcompile::diagonal_scan``: x_k = λ ⊙ x_{k-1} + bu_k in real arithmetic.

    Shapes: ``lam_re``, ``lam_im`` (n,); ``bu_re``, ``bu_im`` (batch, length, n)
    → (x_re, x_im), each (batch, length, n). Parameters are deliberately unannotated: the
    exporter then accepts any tensor type and dispatches every call here.
    """
    call_op = exporter_helper()
    body = _BodyBuilder(bu_re.dtype, _state_width(bu_re))
    s_re, s_im, u_re, u_im = (body.input(n) for n in ("s_re", "s_im", "u_re", "u_im"))
    # (λ_re + iλ_im)(s_re + i s_im) + u
    x_re = body("Add", body("Sub", body("Mul", s_re, lam_re), body("Mul", s_im, lam_im)), u_re)
    x_im = body("Add", body("Add", body("Mul", s_im, lam_re), body("Mul", s_re, lam_im)), u_im)
    # A graph may not list one value as two outputs: the scan outputs get their own names.
    y_re, y_im = body("Identity", x_re), body("Identity", x_im)
    graph = body.graph([s_re, s_im, u_re, u_im], [x_re, x_im, y_re, y_im], "diagonal_scan")
    zeros = _zero_state(bu_re)
    outs = call_op(
        "Scan",
        zeros,
        call_op("Identity", zeros)[0],
        bu_re,
        bu_im,
        _num_outputs=4,
        body=graph,
        num_scan_inputs=2,
        scan_input_axes=[1, 1],
        scan_output_axes=[1, 1],
    )
    return outs[2], outs[3]


def dense_scan_to_onnx(A, bu):
    """ONNX for ``ssmcompile::dense_scan``: x_k = A x_{k-1} + bu_k.

    Shapes: ``A`` (n, n), ``bu`` (batch, length, n) → x (batch, length, n).
    """
    call_op = exporter_helper()
    a_t = call_op("Transpose", A, perm=[1, 0])[0]  # row-vector states: x_k = x_{k-1} Aᵀ + bu_k
    body = _BodyBuilder(bu.dtype, _state_width(bu))
    s, u = body.input("s"), body.input("u")
    x = body("Add", body("MatMul", s, a_t), u)
    y = body("Identity", x)
    graph = body.graph([s, u], [x, y], "dense_scan")
    outs = call_op(
        "Scan",
        _zero_state(bu),
        bu,
        _num_outputs=2,
        body=graph,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_output_axes=[1],
    )
    return outs[1]


# qualified op name → (translation, (number of tensor inputs, number of outputs))
_TRANSLATIONS: dict[str, tuple[Callable, tuple[int, int]]] = {
    DIAGONAL_SCAN: (diagonal_scan_to_onnx, (4, 2)),
    DENSE_SCAN: (dense_scan_to_onnx, (2, 1)),
}


def scan_ops_in(graph: torch.fx.Graph) -> tuple[torch._ops.OpOverload, ...]:
    """The ``ssmcompile::*`` custom ops that ``graph`` (an exported program's) calls."""
    found: dict[str, torch._ops.OpOverload] = {}
    for node in graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
            if target.namespace == "ssmcompile":
                found[target.name()] = target
    return tuple(found[k] for k in sorted(found))


def scan_translation_table(ops: Iterable[torch._ops.OpOverload]) -> dict:
    """``custom_translation_table`` for ``ops``; ExportError for an op we cannot translate."""
    table = {}
    for op in ops:
        name = op.name().split(".")[0]
        if name not in _TRANSLATIONS:
            raise ExportError(f"no ONNX translation for custom op {name}")
        fn, (n_in, n_out) = _TRANSLATIONS[name]
        schema = op._schema
        if (len(schema.arguments), len(schema.returns)) != (n_in, n_out):
            raise ExportError(
                f"{name} has schema {schema}; its ONNX translation expects {n_in} tensors in "
                f"and {n_out} out"
            )
        table[op] = fn
    return table
