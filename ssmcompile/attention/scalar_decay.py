"""Linear attention with a scalar decay per head and step (RetNet, simple GLA): step and
chunked forms.

Per head, state S_t ∈ R^{d_k×d_v}:  S_t = exp(g_t)·S_{t−1} + k_t v_tᵀ,  o_t = S_tᵀ q_t,
with g_t = log γ_t ≤ 0 (RetNet: a constant per head; GLA: computed from the input).

Chunked form (the training path), chunks of C steps, b_i = Σ_{j≤i} g_j inside a chunk:

    o_i = Σ_{j≤i} exp(b_i − b_j)(q_i·k_j) v_j + exp(b_i)·S_0ᵀ q_i
    S_C = exp(b_C)·S_0 + Σ_j exp(b_C − b_j) k_j v_jᵀ

Every exponent is ≤ 0 (the j > i entries are masked *before* exp), so nothing overflows however
long the chunk or fast the decay. A length that is not a multiple of C is padded with k = v = 0
and g = 0: padded steps add nothing to the state and do not decay it.

Shapes: q, k (batch, heads, L, d_k); v (batch, heads, L, d_v); g (batch, heads, L);
state (batch, heads, d_k, d_v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeError

__all__ = ["scalar_decay_step", "scalar_decay_chunked", "pad_to_chunks"]


def scalar_decay_step(q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """One step. q, k (batch, heads, d_k), v (batch, heads, d_v), g (batch, heads), state
    (batch, heads, d_k, d_v) → (o (batch, heads, d_v), next state)."""
    state = torch.exp(g)[..., None, None] * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    return (q.unsqueeze(-1) * state).sum(-2), state


def pad_to_chunks(chunk: int, *tensors: Tensor) -> tuple[int, list[Tensor]]:
    """Zero-pad dim 2 (time) of each tensor to a multiple of ``chunk`` → (L, padded tensors)."""
    L = tensors[0].shape[2]
    pad = (-L) % chunk
    out = []
    for t in tensors:
        spec = (0, 0) * (t.ndim - 3) + (0, pad)
        out.append(F.pad(t, spec) if pad else t)
    return L, out


def _check(q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor | None) -> None:
    b, h, L, dk = q.shape
    dv = v.shape[-1]
    ok = (k.shape == q.shape and v.shape == (b, h, L, dv) and g.shape == (b, h, L)
          and (state is None or state.shape == (b, h, dk, dv)))
    if not ok:
        raise ShapeError(f"linear attention: q{tuple(q.shape)} k{tuple(k.shape)} "
                         f"v{tuple(v.shape)} g{tuple(g.shape)} do not fit")


def decay_matrix(b: Tensor) -> Tensor:
    """exp(b_i − b_j) for j ≤ i, 0 above the diagonal. b (..., C) → (..., C, C)."""
    C = b.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=b.device).tril()
    diff = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    return diff.exp()


def scalar_decay_chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor, chunk: int = 64,
                         initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The whole sequence by chunks → (o (batch, heads, L, d_v), final state).

    ``initial_state``: S_0 (batch, heads, d_k, d_v), zeros when None."""
    _check(q, k, v, g, initial_state)
    L, (q, k, v, g) = pad_to_chunks(chunk, q, k, v, g)
    b_, h, Lp, dk = q.shape
    n = Lp // chunk
    qc, kc, vc = (t.reshape(b_, h, n, chunk, t.shape[-1]) for t in (q, k, v))
    b = g.reshape(b_, h, n, chunk).cumsum(-1)
    # Intra-chunk part for all chunks at once; only the state hand-over is sequential.
    attn = (qc @ kc.mT) * decay_matrix(b)
    o_intra = attn @ vc
    q_in = qc * b.exp().unsqueeze(-1)  # reads S_0 decayed to step i
    k_out = kc * (b[..., -1:] - b).exp().unsqueeze(-1)  # k_j decayed to the chunk end
    chunk_decay = b[..., -1].exp()  # (batch, heads, n)
    S = q.new_zeros(b_, h, dk, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for c in range(n):
        outs.append(o_intra[:, :, c] + q_in[:, :, c] @ S)
        S = chunk_decay[:, :, c, None, None] * S + k_out[:, :, c].mT @ vc[:, :, c]
    o = torch.stack(outs, dim=2).reshape(b_, h, Lp, -1)
    return o[:, :, :L], S
