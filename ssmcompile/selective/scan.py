"""The selective scan as the custom op ``torch.ops.ssmcompile.selective_scan``.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t,    y_t = C_t · h_t,    h_{-1} = 0,

per channel d (state h_t[d] ∈ R^N), with input-dependent Δ_t, B_t, C_t (Mamba's "selection").
One op covers both state structures: ``A`` (D, N) is Mamba-1's decay per channel and state,
``A`` (D, 1) is Mamba-2's scalar decay per channel (A_t = a_t·I); ``B``/``C`` are (batch, L, G, N)
with channel d reading group d // (D/G) (G = 1: shared; G = heads: per head). The D skip and the
gate stay outside the op, so its schema is five plain tensors in, one out.

Why an opaque op (as for the LTI scans in ``ssmcompile.ops``): fx, ``torch.export`` and dynamo
see one node with a fake kernel instead of a length-dependent loop. On CPU with numba importable
the eager bodies are the numba kernels of ``_numba_selective`` (sequential over time per lane of
channels, nothing of size (batch, L, D, N)); ``SSMCOMPILE_SCAN_ENGINE=torch|numba`` (read on
every call, as for the LTI scans: ``ssmcompile.ops._engine``) forces one. Otherwise the body is
the chunked
kernel in ``_kernel`` (≈2√L Python steps, everything materialised) for small problems, the
chunk-parallel ``_fused`` kernel (≈3√L steps on cache-sized slabs) for medium ones and the
per-step loop in ``_streaming`` for large per-step slabs (see ``_kernels``);
:func:`selective_scan_reference` is their readable sequential twin. The backward is a second
opaque op, ``selective_scan_backward``, that recomputes the states (first-order gradients only:
the backward itself is not differentiable).

On CUDA, :func:`selective_scan` hands the work to ``mamba_ssm``'s fused kernel when that package
is importable; it is never required.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from ..errors import ShapeError
from ..ops._engine import engine_name
from ._fused import fused_backward, fused_forward
from ._kernel import selective_backward, selective_forward
from ._streaming import streaming_backward, streaming_forward

_FLOATS = (torch.float32, torch.float64)
# Which eager kernel runs. Materialising everything (``_kernel``) is cheapest while L·batch·D·N
# is small; from a per-step slab batch·D·N of STREAM_MIN_SLAB on, the per-step loop
# (``_streaming``); in between, the chunk-parallel kernel (``_fused``). Thresholds from training
# steps of the char LM in tools/bench_mamba.py with the kernels taking turns (2 busy cores,
# d_inner 64, batch 8, L 128: N = 128 streaming 262 ms vs fused 308 vs chunked 764; N = 12 fused
# 47 ms vs chunked 63 vs streaming 179); ``--scan-only`` times the bare kernels.
CHUNKED_MAX_NUMEL = 2**18
STREAM_MIN_SLAB = 2**16


def _kernels(u: Tensor, B: Tensor):
    slab = u.shape[0] * u.shape[2] * B.shape[-1]
    if slab * u.shape[1] <= CHUNKED_MAX_NUMEL:
        return selective_forward, selective_backward
    if slab >= STREAM_MIN_SLAB:
        return streaming_forward, streaming_backward
    return fused_forward, fused_backward


@functools.cache
def _numba_kernels():
    """(forward, backward) of ``_numba_selective``, or None (with one warning) without numba."""
    try:
        from ._numba_selective import numba_backward, numba_forward
    except Exception as err:  # noqa: BLE001 - any failure means: use the torch kernels
        warnings.warn(f"ssmcompile: numba selective-scan kernels unavailable ({err!r}); using "
                      "torch kernels", RuntimeWarning, stacklevel=3)
        return None
    return numba_forward, numba_backward


def _eager(u: Tensor, B: Tensor):
    """(forward, backward) eager bodies for these inputs: numba on CPU unless the engine is
    forced to torch (or numba is missing), else the torch kernel for the size."""
    if engine_name() == "numba" and u.device.type == "cpu":
        kernels = _numba_kernels()
        if kernels is not None:
            return kernels
    return _kernels(u, B)


def _check(u, delta, A, B, C) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ShapeError(
            f"selective_scan: u and delta must both be (batch, L, D), got {tuple(u.shape)} and "
            f"{tuple(delta.shape)}"
        )
    batch, length, D = u.shape
    if A.dim() != 2 or A.shape[0] != D:
        raise ShapeError(f"selective_scan: A must be ({D}, N) or ({D}, 1), got {tuple(A.shape)}")
    if B.dim() != 4 or tuple(B.shape[:2]) != (batch, length) or C.shape != B.shape:
        raise ShapeError(
            f"selective_scan: B and C must both be ({batch}, {length}, G, N), got "
            f"{tuple(B.shape)} and {tuple(C.shape)}"
        )
    G, N = B.shape[-2:]
    if G < 1 or D % G != 0 or A.shape[1] not in (1, N):
        raise ShapeError(
            f"selective_scan: need G | D and A's last dim in (1, N); got D={D}, G={G}, N={N}, "
            f"A{tuple(A.shape)}"
        )
    dtypes = {t.dtype for t in (u, delta, A, B, C)}
    if len(dtypes) != 1 or u.dtype not in _FLOATS:
        raise ShapeError(
            "selective_scan: all inputs must share float32 or float64, got "
            f"{sorted(str(d) for d in dtypes)}"
        )


@torch.library.custom_op("ssmcompile::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    _check(u, delta, A, B, C)
    if u.numel() == 0 or B.shape[-1] == 0:
        return torch.zeros_like(u)
    return _eager(u, B)[0](u, delta, A, B, C).contiguous()


@_selective_scan_op.register_fake
def _(u, delta, A, B, C):
    _check(u, delta, A, B, C)
    return u.new_empty(u.shape)


@torch.library.custom_op("ssmcompile::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(
    grad: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    if u.numel() == 0 or B.shape[-1] == 0:
        return tuple(torch.zeros_like(t) for t in (u, delta, A, B, C))  # type: ignore[return-value]
    return _eager(u, B)[1](grad, u, delta, A, B, C)


@_selective_scan_backward_op.register_fake
def _(grad, u, delta, A, B, C):
    return tuple(t.new_empty(t.shape) for t in (u, delta, A, B, C))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    return torch.ops.ssmcompile.selective_scan_backward(grad.contiguous(), *ctx.saved_tensors)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


@functools.cache
def _mamba_ssm_scan():
    """``mamba_ssm``'s fused CUDA selective scan, or None when it is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return selective_scan_fn


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """y_t = C_t · h_t with h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t; one op node when traced.

    Shapes: ``u``, ``delta`` (batch, L, D) (Δ already positive, e.g. after softplus); ``A``
    (D, N) or (D, 1); ``B``, ``C`` (batch, L, G, N), G | D → y (batch, L, D). All float32 or all
    float64. Raises ShapeError on bad shapes/dtypes.
    """
    # fx proxies are not tensors (and not on CUDA): they record the op node.
    fused = _mamba_ssm_scan() if isinstance(u, Tensor) and u.is_cuda else None
    if fused is not None and u.dtype == torch.float32:
        # mamba_ssm wants channels before time and a full (D, N) A.
        N = B.shape[-1]
        y = fused(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(),
                  A.expand(A.shape[0], N).contiguous(), B.permute(0, 2, 3, 1).contiguous(),
                  C.permute(0, 2, 3, 1).contiguous())
        return y.transpose(1, 2)
    return torch.ops.ssmcompile.selective_scan(u, delta, A, B, C)


def selective_scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor
                             ) -> Tensor:
    """Readable twin of :func:`selective_scan`: one time step at a time, same shapes."""
    batch, length, D = u.shape
    G, N = B.shape[-2:]
    group = torch.arange(D, device=u.device) // (D // G)  # channel → its B/C group
    h = u.new_zeros(batch, D, N)
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, t, :, None] * A)  # (batch, D, N or 1)
        B_t = B[:, t, group, :]  # (batch, D, N)
        C_t = C[:, t, group, :]
        h = dA * h + (delta[:, t] * u[:, t])[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    return torch.stack(ys, dim=1) if ys else torch.zeros_like(u)
