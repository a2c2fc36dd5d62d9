"""The fused diagonal SSM layer y = Re(C x), x_k = λ ⊙ x_{k-1} + B u_k, as a custom op.

``torch.ops.ssmcompile.diagonal_ssm(lam_re, lam_im, b_re, b_im, c_re, c_im, u, save_states)
-> (y, x_re, x_im)`` runs the numba kernels of ``_numba_ssm``; ``diagonal_ssm`` (the front end
the layers call) uses it only where it pays and otherwise composes the same function from
matmuls and ``diagonal_scan`` (the unfused path, which is also the op's eager body without
numba and what tracing, ``torch.export`` and ONNX see). ``reference.diagonal_ssm_reference``
is the readable twin.

When the op pays (``tools/bench_limits.py``, 1 thread, float32, fwd+bwd): narrow layers, where
the unfused path's (batch, L, n) intermediates and the skinny matmuls that make them dominate.
At H 8, batch 50, L 784 the fused layer replaces 4 matmuls and the scan; at H ≥ ``FUSED_MAX_WIDTH``
the matmuls are compute-bound BLAS calls that the kernel's matrix-vector loops do not beat.

Backward: a_k = Cᴴ g_k + conj(λ) a_{k+1}; ∂u_k = Re(Bᴴ a_k); ∂B = Σ a_k u_kᵀ; ∂C_re = Σ g_k x_reᵀ,
∂C_im = −Σ g_k x_imᵀ; ∂λ = Σ a_k conj(x_{k-1}) (PyTorch's complex-gradient convention). It needs
the states x, so the forward saves them only when a gradient will be asked for
(``save_states``); under ``create_graph`` the backward is composed of differentiable ops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeError
from . import _buffers, _engine
from .diagonal_scan import _backward_composite as _scan_backward
from .diagonal_scan import diagonal_scan_real

# Widest layer (max of input and output width) the fused op is used for. Measured crossover
# (fwd+bwd, 1 thread): H 8 fused 4-6x faster, H 32 ≈ 1.5x, H 128 (n 93) 2x slower.
FUSED_MAX_WIDTH = 48

_kernels = None


def _ssm_kernels():
    global _kernels
    if _kernels is None:
        from . import _numba_ssm

        _kernels = _numba_ssm
    return _kernels


def _check(lam_re, lam_im, b_re, b_im, c_re, c_im, u) -> None:
    n = lam_re.shape[0] if lam_re.dim() == 1 else -1
    ok = (
        n >= 0
        and lam_im.shape == lam_re.shape
        and b_re.dim() == 2
        and b_re.shape[0] == n
        and b_im.shape == b_re.shape
        and c_re.dim() == 2
        and c_re.shape[1] == n
        and c_im.shape == c_re.shape
        and u.dim() == 3
        and u.shape[2] == b_re.shape[1]
    )
    if not ok:
        raise ShapeError(
            "diagonal_ssm: expected λ (n,), B (n, H), C (P, n), u (batch, L, H); got "
            + ", ".join(str(tuple(t.shape)) for t in (lam_re, lam_im, b_re, b_im, c_re, c_im, u))
        )
    dtypes = {t.dtype for t in (lam_re, lam_im, b_re, b_im, c_re, c_im, u)}
    if len(dtypes) != 1 or lam_re.dtype not in (torch.float32, torch.float64):
        raise ShapeError(f"diagonal_ssm: inputs must share float32 or float64, got {dtypes}")


# The kernels run on the state padded with zero modes to a multiple of this (λ = 0, B and C
# rows 0: they contribute exact zeros): with n 47 or 12 every inner loop over the state had a
# scalar remainder as long as its vector part.
STATE_PAD = 8


def padded_width(n: int) -> int:
    """n rounded up to a multiple of ``STATE_PAD`` (the saved states' last dimension)."""
    return -(-n // STATE_PAD) * STATE_PAD


def _padded(lam_re, lam_im, b_re, b_im, c_re, c_im):
    """λ (n,), B (n, H), C (P, n) with zero modes appended up to ``padded_width(n)``."""
    extra = padded_width(lam_re.shape[0]) - lam_re.shape[0]
    if extra == 0:
        return lam_re, lam_im, b_re, b_im, c_re, c_im
    return (F.pad(lam_re, (0, extra)), F.pad(lam_im, (0, extra)), F.pad(b_re, (0, 0, 0, extra)),
            F.pad(b_im, (0, 0, 0, extra)), F.pad(c_re, (0, extra)), F.pad(c_im, (0, extra)))


def _unfused(lam_re, lam_im, b_re, b_im, c_re, c_im, u) -> tuple[Tensor, Tensor, Tensor]:
    x_re, x_im = diagonal_scan_real(lam_re, lam_im, u @ b_re.T, u @ b_im.T)
    return x_re @ c_re.T - x_im @ c_im.T, x_re, x_im


@torch.library.custom_op("ssmcompile::diagonal_ssm", mutates_args=())
def _diagonal_ssm_op(
    lam_re: Tensor, lam_im: Tensor, b_re: Tensor, b_im: Tensor, c_re: Tensor, c_im: Tensor,
    u: Tensor, save_states: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    _check(lam_re, lam_im, b_re, b_im, c_re, c_im, u)
    n, (B, L, _), P = lam_re.shape[0], u.shape, c_re.shape[0]
    if _engine.numba_kernels(u) is None or u.numel() == 0:
        y, x_re, x_im = _unfused(lam_re, lam_im, b_re, b_im, c_re, c_im, u)
        if not save_states:
            x_re = x_im = u.new_empty(0, 0, 0)
        else:  # the same padded layout as the kernels' (the fake kernel promises it)
            x_re, x_im = (F.pad(x, (0, padded_width(n) - n)) for x in (x_re, x_im))
        return y.contiguous(), x_re.contiguous(), x_im.contiguous()
    k = _ssm_kernels()
    lam_re, lam_im, b_re, b_im, c_re, c_im = _padded(lam_re, lam_im, b_re, b_im, c_re, c_im)
    n = lam_re.shape[0]
    lr, li, uu = _engine._np(lam_re), _engine._np(lam_im), _engine._np(u)
    bTr, bTi = _engine._np(b_re.T), _engine._np(b_im.T)
    cr, ci = _engine._np(c_re), _engine._np(c_im)
    y = _buffers.empty((B, L, P), uu.dtype)
    shape = (B, L, n) if save_states else (0, 0, 0)
    xr, xi = _buffers.empty(shape, uu.dtype), _buffers.empty(shape, uu.dtype)
    work = B * L * n * (u.shape[2] + P + 1)
    _engine.parallel_for(lambda t0, t1: k.ssm_fwd(lr, li, bTr, bTi, cr, ci, uu, y, xr, xi, t0, t1),
                         B, work)  # fmt: skip
    return torch.from_numpy(y), torch.from_numpy(xr), torch.from_numpy(xi)


@_diagonal_ssm_op.register_fake
def _(lam_re, lam_im, b_re, b_im, c_re, c_im, u, save_states):
    _check(lam_re, lam_im, b_re, b_im, c_re, c_im, u)
    B, L, _ = u.shape
    shape = (B, L, padded_width(lam_re.shape[0])) if save_states else (0, 0, 0)
    return u.new_empty(B, L, c_re.shape[0]), u.new_empty(shape), u.new_empty(shape)


def _backward_composite(lam_re, lam_im, b_re, b_im, c_re, c_im, u, x_re, x_im, g):
    """Differentiable backward (double backward, and the eager body without numba). The
    states may carry the op's zero padding beyond n."""
    n = lam_re.shape[0]
    x_re, x_im = x_re[..., :n], x_im[..., :n]
    g_lr, g_li, a_re, a_im = _scan_backward(lam_re, lam_im, x_re, x_im, g @ c_re, -(g @ c_im))
    g_u = a_re @ b_re + a_im @ b_im
    g_br, g_bi = flat(a_re).T @ flat(u), flat(a_im).T @ flat(u)
    g_cr, g_ci = flat(g).T @ flat(x_re), -(flat(g).T @ flat(x_im))
    return g_lr, g_li, g_br, g_bi, g_cr, g_ci, g_u


def flat(t: Tensor) -> Tensor:
    """(batch, L, m) → (batch·L, m)."""
    return t.reshape(-1, t.shape[-1])


@torch.library.custom_op("ssmcompile::diagonal_ssm_backward", mutates_args=())
def _diagonal_ssm_backward_op(
    lam_re: Tensor, lam_im: Tensor, b_re: Tensor, b_im: Tensor, c_re: Tensor, c_im: Tensor,
    u: Tensor, x_re: Tensor, x_im: Tensor, g: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(∂λ_re, ∂λ_im (n,), ∂b_re, ∂b_im (n, H), ∂c_re, ∂c_im (P, n), ∂u (batch, L, H))."""
    if _engine.numba_kernels(u) is None or u.numel() == 0:
        outs = _backward_composite(lam_re, lam_im, b_re, b_im, c_re, c_im, u, x_re, x_im, g)
        return tuple(o.contiguous() for o in outs)
    k = _ssm_kernels()
    n0 = lam_re.shape[0]
    inputs = (*_padded(lam_re, lam_im, b_re, b_im, c_re, c_im), u, x_re, x_im, g)
    arrays = [_engine._np(t) for t in inputs]
    uu = arrays[6]
    (B, L, H), n, P = uu.shape, arrays[0].shape[0], c_re.shape[0]
    du = _buffers.empty(uu.shape, uu.dtype)
    parts = [np.zeros((B, H, n)), np.zeros((B, H, n)), np.zeros((B, P, n)), np.zeros((B, P, n)),
             np.zeros((B, n)), np.zeros((B, n))]  # fmt: skip
    _engine.parallel_for(lambda t0, t1: k.ssm_bwd(*arrays, du, *parts, t0, t1), B,
                         B * L * n * (2 * H + 2 * P + 1))  # fmt: skip
    dbr, dbi, dcr, dci, dlr, dli = (
        torch.from_numpy(_engine._kernels.sum_rows(p)[..., :n0]).to(u.dtype) for p in parts
    )
    return (dlr.contiguous(), dli.contiguous(), dbr.T.contiguous(), dbi.T.contiguous(),
            dcr.contiguous(), dci.contiguous(), torch.from_numpy(du))


@_diagonal_ssm_backward_op.register_fake
def _(lam_re, lam_im, b_re, b_im, c_re, c_im, u, x_re, x_im, g):
    return tuple(t.new_empty(t.shape) for t in (lam_re, lam_im, b_re, b_im, c_re, c_im, u))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:7], output[1], output[2])
    ctx.saved_states = inputs[7]
    # The states are returned only to be saved: without this, autograd fills two (batch, L, n)
    # zero gradients for them on every backward (measured: ~half the layer's backward).
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, g, _gx_re, _gx_im):
    *params, x_re, x_im = ctx.saved_tensors
    if g is None:  # y unused (grads are not materialised)
        return (None,) * 8
    if not ctx.saved_states:
        raise RuntimeError("diagonal_ssm: backward through a call made with save_states=False")
    if torch.is_grad_enabled():
        # create_graph: stay differentiable. The saved states are marked non-differentiable,
        # so recompute them from the inputs: a double backward must see x depend on λ, B, u.
        _, x_re, x_im = _unfused(*params)
        grads = _backward_composite(*params, x_re, x_im, g)
    else:
        grads = torch.ops.ssmcompile.diagonal_ssm_backward(*params, x_re, x_im, g)
    return (*grads, None)


_diagonal_ssm_op.register_autograd(_backward, setup_context=_setup_context)


def fused_pays(u: object, b_re: object, c_re: object) -> bool:
    """Whether ``diagonal_ssm`` runs the fused op: real CPU tensors with the numba kernels,
    not under ``torch.export`` (ONNX translates the unfused ops), a narrow layer."""
    if not all(isinstance(t, Tensor) for t in (u, b_re, c_re)) or u.dim() != 3:
        return False  # fx proxies: tracing records the unfused, translatable ops
    if torch.compiler.is_exporting() or _engine.numba_kernels(u) is None:
        return False
    return max(b_re.shape[1], c_re.shape[0]) <= FUSED_MAX_WIDTH


def diagonal_ssm(lam_re, lam_im, b_re, b_im, c_re, c_im, u) -> Tensor:
    """y_k = Re(C x_k) with x_k = λ ⊙ x_{k-1} + B u_k, x_{-1} = 0, all in real parts.

    Shapes: ``lam_re``, ``lam_im`` (n,); ``b_re``, ``b_im`` (n, H); ``c_re``, ``c_im`` (P, n);
    ``u`` (batch, L, H), one float dtype → y (batch, L, P). The feed-through D is the caller's.
    """
    if not fused_pays(u, b_re, c_re):
        return _unfused(lam_re, lam_im, b_re, b_im, c_re, c_im, u)[0]
    inputs = (lam_re, lam_im, b_re, b_im, c_re, c_im, u)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    return torch.ops.ssmcompile.diagonal_ssm(*inputs, save)[0]
