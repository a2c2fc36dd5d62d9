"""Translations of our scan custom ops to ONNX ``Scan`` nodes (never unrolled over time).

``torch.onnx.export(..., dynamo=True, custom_translation_table=scan_translation_table(ops,
chunk))`` calls these functions with ``onnx_ir`` values instead of tensors. ``chunk`` picks the
formulation, one ``Scan`` node per op either way, so the node count never depends on the length:

- ``chunk = 1``: a body of ONE time step, scanning (batch, length, n) along the length (this
  module). onnxruntime spends ~3-20 µs per iteration whatever n is, which flattens the gain of a
  reduced model (issue 6).
- ``chunk = T ≥ 2`` (default ``DEFAULT_SCAN_CHUNK``): the length is padded to a multiple of T,
  each chunk is solved by one batched ``MatMul`` against a Toeplitz matrix of powers, and the
  Scan carries the state across the ceil(L / T) chunks only (``onnx_chunked``). A layer with
  many states uses a smaller chunk, or the per-step body, where the matrix work would cost more
  than the iterations it saves (``layer_chunk``).

Nodes are recorded through the exporter's private ``call_op`` (``onnx_builder``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .onnx_builder import (
    BodyBuilder,
    OuterGraph,
    at_least_one_step,
    complex_mul,
    crop_steps,
    exporter_helper,
)
from .onnx_chunked import chunked_dense_scan, chunked_diagonal_scan
from .onnx_selective import SELECTIVE_SCAN, selective_scan_translation
from .result import ExportError

DIAGONAL_SCAN = "ssmcompile::diagonal_scan"
DENSE_SCAN = "ssmcompile::dense_scan"

# Measured with tools/bench_onnx.py and a per-size sweep (1 thread, L = 1024, batch 1 and 8; see
# the module docstring of tools/bench_onnx.py): 16-32 is best for n ≤ 128, 32 by a hair at n = 16.
DEFAULT_SCAN_CHUNK = 32
MAX_SCAN_CHUNK = 256
# A chunk costs O(T) multiply-adds per step and state entry (T·n per step for a diagonal layer,
# T·n² for a dense one): above these T·n the matrix work outgrows the per-iteration overhead it
# saves, so large layers use a smaller chunk, or the per-step body below MIN_LAYER_CHUNK.
DIAGONAL_MAX_CHUNK_WIDTH = 4096
DENSE_MAX_CHUNK_WIDTH = 256
MIN_LAYER_CHUNK = 4
# Up to this n the chunk-carry Scan multiplies by λ^T as one (2n × 2n) MatMul: 3 body nodes
# instead of 10, ~2x faster per iteration at n ≤ 64 and ~3x slower at n = 256 (measured).
MATMUL_CARRY_MAX_STATES = 64


def check_scan_chunk(chunk: int) -> int:
    """``chunk`` if it is an int in [1, MAX_SCAN_CHUNK], else ExportError."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_SCAN_CHUNK:
        raise ExportError(f"scan chunk must be an int in [1, {MAX_SCAN_CHUNK}], got {chunk!r}")
    return chunk


def layer_chunk(chunk: int, n: int | None, max_width: int) -> int:
    """The chunk a layer with ``n`` states uses when ``chunk`` is asked for: ``chunk`` itself if
    chunk·n ≤ max_width (or n is unknown), else the largest T with T·n ≤ max_width, or 1 (the
    per-step body) when that T is below MIN_LAYER_CHUNK."""
    if n is None or chunk * n <= max_width:
        return chunk
    fit = max_width // n
    return fit if fit >= MIN_LAYER_CHUNK else 1


def _zero_state(g: OuterGraph, bu):
    """(batch, n) zeros shaped like one time slice of ``bu`` (batch, length, n), in g's dtype."""
    return g.fill(g.dims(bu, 0, 2), 0.0)


def _state_width(bu):
    dim = bu.shape[2] if bu.shape is not None and len(bu.shape) == 3 else None
    return dim if isinstance(dim, int) else None


def diagonal_scan_to_onnx(lam_re, lam_im, bu_re, bu_im):
    """Per-step ONNX for ``ssmcompile::diagonal_scan``: x_k = λ ⊙ x_{k-1} + bu_k, real arithmetic.

    Shapes: ``lam_re``, ``lam_im`` (n,); ``bu_re``, ``bu_im`` (batch, length, n) → (x_re, x_im),
    each (batch, length, n). Parameters are deliberately unannotated: the exporter then accepts
    any tensor type and dispatches every call here.
    """
    g = OuterGraph(bu_re.dtype)
    body = BodyBuilder(bu_re.dtype)
    shape = [None, _state_width(bu_re)]
    s_re, s_im, u_re, u_im = (body.input(n, shape) for n in ("s_re", "s_im", "u_re", "u_im"))
    m_re, m_im = complex_mul(body, s_re, s_im, lam_re, lam_im)
    x_re, x_im = body("Add", m_re, u_re), body("Add", m_im, u_im)
    # A graph may not list one value as two outputs: the scan outputs get their own names.
    y_re, y_im = body("Identity", x_re), body("Identity", x_im)
    graph = body.graph([s_re, s_im, u_re, u_im], [x_re, x_im, y_re, y_im], "diagonal_scan")
    p_re, p_im = at_least_one_step(g, bu_re), at_least_one_step(g, bu_im)
    zeros = _zero_state(g, p_re)
    outs = g.outputs(
        "Scan", zeros, g("Identity", zeros), p_re, p_im, count=4, body=graph,
        num_scan_inputs=2, scan_input_axes=[1, 1], scan_output_axes=[1, 1],
    )  # fmt: skip
    return crop_steps(g, outs[2], bu_re), crop_steps(g, outs[3], bu_re)


def dense_scan_to_onnx(A, bu):
    """Per-step ONNX for ``ssmcompile::dense_scan``: x_k = A x_{k-1} + bu_k.

    Shapes: ``A`` (n, n), ``bu`` (batch, length, n) → x (batch, length, n).
    """
    g = OuterGraph(bu.dtype)
    a_t = g("Transpose", A, perm=[1, 0])  # row-vector states: x_k = x_{k-1} Aᵀ + bu_k
    body = BodyBuilder(bu.dtype)
    s, u = body.input("s", [None, _state_width(bu)]), body.input("u", [None, _state_width(bu)])
    x = body("Add", body("MatMul", s, a_t), u)
    graph = body.graph([s, u], [x, body("Identity", x)], "dense_scan")
    padded = at_least_one_step(g, bu)
    outs = g.outputs(
        "Scan", _zero_state(g, padded), padded, count=2, body=graph,
        num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1],
    )  # fmt: skip
    return crop_steps(g, outs[1], bu)


def diagonal_scan_translation(chunk: int) -> Callable:
    """The translation of ``ssmcompile::diagonal_scan`` for ``chunk`` (1: per step); each call
    picks its layer's chunk from the state size (``layer_chunk``)."""
    if check_scan_chunk(chunk) == 1:
        return diagonal_scan_to_onnx

    def diagonal_scan_chunked_to_onnx(lam_re, lam_im, bu_re, bu_im):
        n = _state_width(bu_re)
        size = layer_chunk(chunk, n, DIAGONAL_MAX_CHUNK_WIDTH)
        if size == 1:
            return diagonal_scan_to_onnx(lam_re, lam_im, bu_re, bu_im)
        matmul_carry = n is not None and n <= MATMUL_CARRY_MAX_STATES
        return chunked_diagonal_scan(lam_re, lam_im, bu_re, bu_im, size, matmul_carry)

    return diagonal_scan_chunked_to_onnx


def dense_scan_translation(chunk: int) -> Callable:
    """The translation of ``ssmcompile::dense_scan`` for ``chunk`` (1: per step); each call
    picks its layer's chunk from the state size (``layer_chunk``)."""
    if check_scan_chunk(chunk) == 1:
        return dense_scan_to_onnx

    def dense_scan_chunked_to_onnx(A, bu):
        size = layer_chunk(chunk, _state_width(bu), DENSE_MAX_CHUNK_WIDTH)
        return dense_scan_to_onnx(A, bu) if size == 1 else chunked_dense_scan(A, bu, size)

    return dense_scan_chunked_to_onnx


# qualified op name → (translation for a chunk, (number of tensor inputs, number of outputs))
_TRANSLATIONS: dict[str, tuple[Callable[[int], Callable], tuple[int, int]]] = {
    DIAGONAL_SCAN: (diagonal_scan_translation, (4, 2)),
    DENSE_SCAN: (dense_scan_translation, (2, 1)),
    SELECTIVE_SCAN: (selective_scan_translation, (5, 1)),
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


def scan_translation_table(
    ops: Iterable[torch._ops.OpOverload], chunk: int = DEFAULT_SCAN_CHUNK
) -> dict:
    """``custom_translation_table`` for ``ops`` with scans in chunks of ``chunk`` steps (1: per
    step); ExportError for an op we cannot translate or a bad chunk."""
    check_scan_chunk(chunk)
    table = {}
    for op in ops:
        name = op.name().split(".")[0]
        if name not in _TRANSLATIONS:
            raise ExportError(f"no ONNX translation for custom op {name}")
        translation, (n_in, n_out) = _TRANSLATIONS[name]
        schema = op._schema
        if (len(schema.arguments), len(schema.returns)) != (n_in, n_out):
            raise ExportError(
                f"{name} has schema {schema}; its ONNX translation expects {n_in} tensors in "
                f"and {n_out} out"
            )
        table[op] = translation(chunk)
    return table


__all__ = [
    "DIAGONAL_SCAN",
    "DENSE_SCAN",
    "DEFAULT_SCAN_CHUNK",
    "check_scan_chunk",
    "layer_chunk",
    "diagonal_scan_to_onnx",
    "dense_scan_to_onnx",
    "diagonal_scan_translation",
    "dense_scan_translation",
    "exporter_helper",
    "scan_ops_in",
    "scan_translation_table",
]
