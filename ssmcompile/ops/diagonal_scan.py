"""Diagonal complex linear recurrence as the custom op ``torch.ops.ssmcompile.diagonal_scan``.

x_k = λ ⊙ x_{k-1} + bu_k, x_{-1} = 0, for a diagonal complex λ. The op takes and returns real
tensors (real and imaginary parts separately) because inductor has no complex codegen and the ONNX
exporters reject complex tensors; the schema is deliberately plain (four tensors in, two out, no
optional arguments) so an ONNX translation to ``Scan`` stays simple.

Why an opaque op: fx, ``torch.export`` and dynamo see one node with a fake implementation
instead of a shape-dependent loop, so tracing works at any length and the scan is one thing to
match and translate. The eager body runs on CPU the numba kernel of ``_numba_scan`` (natural
layout, one pass, ≈ the memory-bandwidth floor) and elsewhere, or with
``SSMCOMPILE_SCAN_ENGINE=torch`` or without numba, the chunked torch kernel of ``_chunked`` (≈2√L
Python steps); see ``_engine``. ``reference.diagonal_scan_reference`` is their readable twin.

Choice per backend (``tools/bench_scan.py``, batch 16, L 1024, float32, fwd+bwd, 1 thread, on a
loaded 2-core VM): n = 16: op 23 ms, inductor-compiled pure-torch chunked scan 26 ms, loop 779 ms;
n = 256: op 463 ms, compiled 366 ms, loop 42.7 s. Inductor wins by ~20 % at large n only and
costs 200-240 s of compile per shape, so the op is the default for every backend (eager,
aot_eager, export, inductor, ONNX) and there is no switch.

Backward: the adjoint of a linear recurrence is the same recurrence run backwards with conj(λ):
a_k = g_k + conj(λ) a_{k+1}; ∂bu_k = a_k; ∂λ = Σ_k a_k · conj(x_{k-1}) (PyTorch's convention,
gradient = ∂/∂Re + i ∂/∂Im). A first-order backward is one call of the private op
``ssmcompile::diagonal_scan_backward`` (with numba: one reverse pass over a, ∂bu and ∂λ, no flips);
under ``create_graph`` the backward is composed of differentiable ops (the scan op itself on
flipped inputs), so double backward works.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError
from . import _engine
from ._chunked import diagonal_scan_time_major, time_major

_FLOATS = (torch.float32, torch.float64)


def _check(lam_re, lam_im, bu_re, bu_im) -> None:
    if lam_re.dim() != 1 or lam_im.shape != lam_re.shape:
        raise ShapeError(
            f"diagonal_scan: lam_re/lam_im must both be (n,), got "
            f"{tuple(lam_re.shape)} and {tuple(lam_im.shape)}"
        )
    n = lam_re.shape[0]
    if bu_re.dim() != 3 or bu_re.shape[-1] != n or bu_im.shape != bu_re.shape:
        raise ShapeError(
            f"diagonal_scan: bu_re/bu_im must both be (batch, length, {n}), got "
            f"{tuple(bu_re.shape)} and {tuple(bu_im.shape)}"
        )
    dtypes = {t.dtype for t in (lam_re, lam_im, bu_re, bu_im)}
    if len(dtypes) != 1 or lam_re.dtype not in _FLOATS:
        raise ShapeError(
            f"diagonal_scan: all inputs must share float32 or float64, got "
            f"{sorted(str(d) for d in dtypes)}"
        )


@torch.library.custom_op("ssmcompile::diagonal_scan", mutates_args=())
def _diagonal_scan_op(
    lam_re: torch.Tensor, lam_im: torch.Tensor, bu_re: torch.Tensor, bu_im: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(lam_re, lam_im, bu_re, bu_im)
    if bu_re.numel() == 0:
        return torch.zeros_like(bu_re), torch.zeros_like(bu_im)
    kernels = _engine.numba_kernels(lam_re, lam_im, bu_re, bu_im)
    if kernels is not None:
        return _engine.diagonal_forward(kernels, lam_re, lam_im, bu_re, bu_im)
    xr, xi = diagonal_scan_time_major(
        lam_re.contiguous(), lam_im.contiguous(), time_major(bu_re), time_major(bu_im)
    )
    # Fresh standard-stride outputs, whatever the batch size (the fake kernel promises this).
    out_r = bu_re.new_empty(bu_re.shape).copy_(xr.transpose(0, 1))
    out_i = bu_im.new_empty(bu_im.shape).copy_(xi.transpose(0, 1))
    return out_r, out_i


@_diagonal_scan_op.register_fake
def _(lam_re, lam_im, bu_re, bu_im):
    _check(lam_re, lam_im, bu_re, bu_im)
    return bu_re.new_empty(bu_re.shape), bu_im.new_empty(bu_im.shape)


def _setup_context(ctx, inputs, output) -> None:
    lam_re, lam_im, _, _ = inputs
    ctx.save_for_backward(lam_re, lam_im, *output)


def _backward_composite(lam_re, lam_im, x_re, x_im, g_re, g_im):
    """Differentiable backward: the op on time-flipped inputs, then ∂λ by elementwise ops."""
    a_re, a_im = torch.ops.ssmcompile.diagonal_scan(lam_re, -lam_im, g_re.flip(1), g_im.flip(1))
    a_re, a_im = a_re.flip(1), a_im.flip(1)
    # ∂λ = Σ_{batch,k≥1} a_k conj(x_{k-1}); x_{-1} = 0 drops k = 0.
    ar, ai = a_re[:, 1:], a_im[:, 1:]
    xr, xi = x_re[:, :-1], x_im[:, :-1]
    # (einsum lowers this to a batched matmul over n with strided copies: ~10x slower here.)
    g_lam_re = (ar * xr).addcmul_(ai, xi).sum((0, 1))
    g_lam_im = (ai * xr).addcmul_(ar, xi, value=-1).sum((0, 1))
    return g_lam_re, g_lam_im, a_re, a_im


@torch.library.custom_op("ssmcompile::diagonal_scan_backward", mutates_args=())
def _diagonal_scan_backward_op(
    lam_re: torch.Tensor,
    lam_im: torch.Tensor,
    x_re: torch.Tensor,
    x_im: torch.Tensor,
    g_re: torch.Tensor,
    g_im: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂λ_re, ∂λ_im (n,), ∂bu_re, ∂bu_im (batch, L, n)) of ``diagonal_scan`` at output x."""
    kernels = _engine.numba_kernels(lam_re, lam_im, x_re, x_im, g_re, g_im)
    if kernels is None or g_re.numel() == 0:
        outs = _backward_composite(lam_re, lam_im, x_re, x_im, g_re, g_im)
        return tuple(o.contiguous() for o in outs)
    return _engine.diagonal_backward(kernels, lam_re, lam_im, x_re, x_im, g_re, g_im)


@_diagonal_scan_backward_op.register_fake
def _(lam_re, lam_im, x_re, x_im, g_re, g_im):
    return (
        lam_re.new_empty(lam_re.shape),
        lam_im.new_empty(lam_im.shape),
        g_re.new_empty(g_re.shape),
        g_im.new_empty(g_im.shape),
    )


def _backward(ctx, g_re, g_im):
    lam_re, lam_im, x_re, x_im = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: stay differentiable
        return _backward_composite(lam_re, lam_im, x_re, x_im, g_re, g_im)
    return torch.ops.ssmcompile.diagonal_scan_backward(lam_re, lam_im, x_re, x_im, g_re, g_im)


_diagonal_scan_op.register_autograd(_backward, setup_context=_setup_context)


def diagonal_scan_real(
    lam_re: torch.Tensor, lam_im: torch.Tensor, bu_re: torch.Tensor, bu_im: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_k = λ ⊙ x_{k-1} + bu_k on real/imag parts; one op node under fx / export / dynamo.

    Shapes: ``lam_re``, ``lam_im`` (n,); ``bu_re``, ``bu_im`` (batch, length, n), all float32 or
    all float64 → (x_re, x_im), each (batch, length, n). Raises ShapeError on bad shapes/dtypes.
    """
    return torch.ops.ssmcompile.diagonal_scan(lam_re, lam_im, bu_re, bu_im)


def diagonal_scan(lam: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """Complex front end of :func:`diagonal_scan_real`.

    Shapes: ``lam`` (n,) complex, ``bu`` (batch, length, n) complex → x (batch, length, n) complex.
    """
    for name, t in (("lam", lam), ("bu", bu)):
        # Proxies (fx) are not tensors: skip the check rather than branch on a traced value.
        if isinstance(t, torch.Tensor) and not t.is_complex():
            raise ShapeError(f"diagonal_scan: {name} must be complex, got {t.dtype}")
    x_re, x_im = torch.ops.ssmcompile.diagonal_scan(lam.real, lam.imag, bu.real, bu.imag)
    return torch.complex(x_re, x_im)
