"""Dense real linear recurrence as the custom op ``torch.ops.ssmcompile.dense_scan``.

x_k = A x_{k-1} + bu_k, x_{-1} = 0, for a real (n, n) matrix A: the state update of a balanced
but not re-diagonalised system. Same design as ``diagonal_scan``: an opaque op (one node under
fx / export / dynamo) with a fake kernel, whose eager body is the chunked kernel in ``_chunked``
and whose readable twin is ``reference.dense_scan_reference``.

Backward: a_k = g_k + Aᵀ a_{k+1} (the op run backwards with Aᵀ), ∂bu_k = a_k and
∂A = Σ_k a_k x_{k-1}ᵀ summed over the batch.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError
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
    x = dense_scan_time_major(A.contiguous(), time_major(bu))
    return bu.new_empty(bu.shape).copy_(x.transpose(0, 1))


@_dense_scan_op.register_fake
def _(A, bu):
    _check(A, bu)
    return bu.new_empty(bu.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], output)


def _backward(ctx, g):
    A, x = ctx.saved_tensors
    a = torch.ops.ssmcompile.dense_scan(A.t(), g.flip(1)).flip(1)
    # ∂A[i, j] = Σ_{batch,k≥1} a_k[i] x_{k-1}[j]; x_{-1} = 0 drops k = 0.
    g_A = torch.einsum("bli,blj->ij", a[:, 1:], x[:, :-1])
    return g_A, a


_dense_scan_op.register_autograd(_backward, setup_context=_setup_context)


def dense_scan(A: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """x_k = A x_{k-1} + bu_k; one op node under fx / export / dynamo.

    Shapes: ``A`` (n, n), ``bu`` (batch, length, n), both float32 or both float64 → x (batch,
    length, n). Raises ShapeError on bad shapes/dtypes.
    """
    return torch.ops.ssmcompile.dense_scan(A, bu)
