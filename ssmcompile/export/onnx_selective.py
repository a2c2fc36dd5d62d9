"""Translation of ``ssmcompile::selective_scan`` to one ONNX ``Scan`` (never unrolled over time).

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t,    y_t = Σ_n C_t[n] h_t[:, n],    h_{-1} = 0

The body is ONE time step: the step's u_t, Δ_t, B_t and C_t are scanned inputs (axis 1 of
(batch, L, …)), the state (batch, D, N) is carried. Unlike the LTI scans there is no chunked
formulation: the decay changes every step, so a chunk has no fixed matrix of powers to reuse;
``chunk`` is accepted and ignored so the op fits the common translation table (``onnx_scan``).

Group sharing (channel d reads group d // (D/G) of B and C) is done inside the body on the
(batch, G, N) slices, so the outer graph never materialises a (batch, L, D, N) tensor.
"""

from __future__ import annotations

from collections.abc import Callable

from .onnx_builder import BodyBuilder, OuterGraph, at_least_one_step, crop_steps

SELECTIVE_SCAN = "ssmcompile::selective_scan"


def _static(value, axis: int) -> int | None:
    shape = value.shape
    dim = shape[axis] if shape is not None and len(shape) > axis else None
    return dim if isinstance(dim, int) else None


def selective_scan_to_onnx(u, delta, A, B, C):
    """Per-step ONNX for ``ssmcompile::selective_scan``.

    Shapes: ``u``, ``delta`` (batch, L, D); ``A`` (D, N) or (D, 1); ``B``, ``C``
    (batch, L, G, N) → y (batch, L, D). Parameters are unannotated so the exporter dispatches
    every call here whatever the tensor type.
    """
    g = OuterGraph(u.dtype)
    D, G, N = _static(u, 2), _static(B, 2), _static(B, 3)
    axis2 = g.ints(2)
    # [1, 1, D/G, 1]: broadcast each group to its D/G channels; [0, -1, N]: merge (G, D/G) → D
    per_group = g("Div", g.dims(u, 2), g.dims(B, 2))
    expand_shape = g.concat(g.ints(1, 1), per_group, g.ints(1))
    merged_shape = g.concat(g.ints(0, -1), g.dims(B, 3))
    state_shape = g.concat(g("Max", g.dims(u, 0), g.ints(1)), g.dims(u, 2), g.dims(B, 3))

    body = BodyBuilder(u.dtype)
    s = body.input("h", [None, D, N])
    u_t, dt_t = body.input("u", [None, D]), body.input("dt", [None, D])
    b_t, c_t = body.input("B", [None, G, N]), body.input("C", [None, G, N])

    def channels(x):  # (batch, G, N) → (batch, D, N)
        grouped = body("Expand", body("Unsqueeze", x, axis2), expand_shape)
        return body("Reshape", grouped, merged_shape)

    dt3 = body("Unsqueeze", dt_t, axis2)  # (batch, D, 1)
    decay = body("Exp", body("Mul", dt3, A))  # (batch, D, N) or (batch, D, 1)
    drive = body("Mul", body("Mul", dt3, body("Unsqueeze", u_t, axis2)), channels(b_t))
    h = body("Add", body("Mul", decay, s), drive)
    y = body("ReduceSum", body("Mul", h, channels(c_t)), axis2)  # keepdims: (batch, D, 1)
    y = body("Squeeze", y, axis2)
    graph = body.graph([s, u_t, dt_t, b_t, c_t], [h, y], "selective_scan")
    scanned = [at_least_one_step(g, x, rank) for x, rank in ((u, 3), (delta, 3), (B, 4), (C, 4))]
    outs = g.outputs(
        "Scan", g.fill(state_shape, 0.0), *scanned, count=2, body=graph,
        num_scan_inputs=4, scan_input_axes=[1, 1, 1, 1], scan_output_axes=[1],
    )  # fmt: skip
    return crop_steps(g, outs[1], u)


def selective_scan_translation(chunk: int) -> Callable:
    """The translation of ``ssmcompile::selective_scan``: the per-step body for any ``chunk``
    (see the module docstring for why there is no chunked form)."""
    del chunk
    return selective_scan_to_onnx


__all__ = ["SELECTIVE_SCAN", "selective_scan_to_onnx", "selective_scan_translation"]
