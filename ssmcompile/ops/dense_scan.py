"""Dense real linear recurrence as the custom op ``torch.ops.ssmcompile.dense_scan``.

x_k = A x_{k-1} + bu_k, x_{-1} = 0, for a real (n, n) matrix A: the state update of a balanced
but not re-diagonalised system. Same design as ``diagonal_scan``: an opaque op (one node under
fx / export / dynamo) with a fake kernel. Its eager body on CPU is the numba kernel of
``_numba_scan`` (natural layout, lanes of 4 batch rows sharing each load of A; faster than the
torch kernels at every n measured, 12 to 256), elsewhere or with ``SSMCOMPILE_SCAN_ENGINE=torch``
the chunked kernel in ``_chunked``; the readable twin is ``reference.dense_scan_reference``.

Backward: a_k = g_k + Aᵀ a_{k+1} (the recurrence run backwards with Aᵀ), ∂bu_k = a_k and
∂A = Σ_k a_k x_{k-1}ᵀ summed over the batch. A first-order backward is one call of the private
op ``ssmcompile::dense_scan_backward`` (numba: the reverse recurrence, no flips, with ∂A summed in
the same pass); under ``create_graph`` it is composed of differentiable ops.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError
from . import _engine
from ._chunked import dense_scan_time_major, time_major

_FLOATS = (torch.float32, torch.float64)


def _check(A, bu) -> None:
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ShapeError(f"dense_scan: A must be square (n, n), got {tuple(A.shape)}")
    if bu.dim() != 3 or bu.shape[-1] != A.shape[0]:
        raise ShapeError(
            f"dense_scan: bu must be (batch, length, {A.shape[0]}), got {tuple(bu.shape)}"
        )
    if A.dtype != bu.dtype or A.dtype not in _FLOATS:
        raise ShapeError(
            f"dense_scan: A and bu must share float32 or float64, got {A.dtype} and {bu.dtype}"
        )


@torch.library.custom_op("ssmcompile::dense_scan", mutates_args=())
def _dense_scan_op(A: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    _check(A, bu)
    if bu.numel() == 0:
        return torch.zeros_like(bu)
    kernels = _engine.numba_kernels(A, bu)
    if kernels is not None:
        return _engine.dense_recurrence(kernels, A.t(), bu)
    x = dense_scan_time_major(A.contiguous(), time_major(bu))
    return bu.new_empty(bu.shape).copy_(x.transpose(0, 1))


@_dense_scan_op.register_fake
def _(A, bu):
    _check(A, bu)
    return bu.new_empty(bu.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], output)


def _grad_A(a, x):
    # ∂A[i, j] = Σ_{batch,k≥1} a_k[i] x_{k-1}[j]; x_{-1} = 0 drops k = 0. One bmm over the batch
    # reads the shifted views in place (einsum copies them: ~2-3x slower here).
    return torch.matmul(a[:, 1:].transpose(1, 2), x[:, :-1]).sum(0)


def _backward_composite(A, x, g):
    """Differentiable backward: the op on time-flipped inputs with Aᵀ."""
    a = torch.ops.ssmcompile.dense_scan(A.t(), g.flip(1)).flip(1)
    return _grad_A(a, x), a


@torch.library.custom_op("ssmcompile::dense_scan_backward", mutates_args=())
def _dense_scan_backward_op(
    A: torch.Tensor, x: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂A (n, n), ∂bu (batch, L, n)) of ``dense_scan`` at output x for output gradient g."""
    kernels = _engine.numba_kernels(A, x, g)
    if kernels is None or g.numel() == 0:
        g_A, a = _backward_composite(A, x, g)
        return g_A.contiguous(), a.contiguous()
    return _engine.dense_recurrence(kernels, A, g, x)


@_dense_scan_backward_op.register_fake
def _(A, x, g):
    return A.new_empty(A.shape), g.new_empty(g.shape)


def _backward(ctx, g):
    A, x = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: stay differentiable
        return _backward_composite(A, x, g)
    return torch.ops.ssmcompile.dense_scan_backward(A, x, g)


_dense_scan_op.register_autograd(_backward, setup_context=_setup_context)


def dense_scan(A: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """x_k = A x_{k-1} + bu_k; one op node under fx / export / dynamo.

    Shapes: ``A`` (n, n), ``bu`` (batch, length, n), both float32 or both float64 → x (batch,
    length, n). Raises ShapeError on bad shapes/dtypes.
    """
    return torch.ops.ssmcompile.dense_scan(A, bu)
