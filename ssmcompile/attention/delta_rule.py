"""The gated delta rule (Gated DeltaNet): step and chunked (WY / UT) forms.

Per head: S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,  o_t = S_tᵀ q_t,
α_t = exp(g_t), g_t ≤ 0, β_t ∈ (0, 1), ‖k_t‖ = 1 in the layer (then the transition is a
contraction). Equivalently S_t = α_t S_{t−1} + k_t u_tᵀ with the "new value"
u_t = β_t (v_t − α_t S_{t−1}ᵀ k_t).

Chunked form (exact, derived as follows). Inside a chunk with start state S_0 and
b_t = Σ_{j≤t} g_j, unrolling gives α_t S_{t−1} = e^{b_t} S_0 + Σ_{j<t} e^{b_t−b_j} k_j u_jᵀ, so

    u_t + β_t Σ_{j<t} e^{b_t−b_j}(k_t·k_j) u_j = β_t v_t − β_t e^{b_t} S_0ᵀ k_t,

i.e. (I + A) U = diag(β) V − diag(β e^{b}) K S_0 with A strictly lower triangular. Hence
U = Ũ − W S_0 with Ũ = (I + A)⁻¹ diag(β) V and W = (I + A)⁻¹ diag(β e^{b}) K (the UT
transform; unit lower triangular solves, batched over every chunk at once), and

    o_t = e^{b_t} S_0ᵀ q_t + Σ_{j≤t} e^{b_t−b_j}(q_t·k_j) u_j,
    S_C = e^{b_C} S_0 + Σ_j e^{b_C−b_j} k_j u_jᵀ.

Only the hand-over of S between chunks is sequential. Padding (length not a multiple of C):
k = v = 0, β = 0, g = 0, which leaves u = 0 and S unchanged.

Shapes: q, k (batch, heads, L, d_k); v (batch, heads, L, d_v); g, beta (batch, heads, L);
state (batch, heads, d_k, d_v).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeError
from .scalar_decay import decay_matrix, pad_to_chunks

__all__ = ["delta_rule_step", "delta_rule_chunked"]


def delta_rule_step(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor
                    ) -> tuple[Tensor, Tensor]:
    """One step. q, k (batch, heads, d_k), v (batch, heads, d_v), g, beta (batch, heads),
    state (batch, heads, d_k, d_v) → (o (batch, heads, d_v), next state)."""
    state = torch.exp(g)[..., None, None] * state
    u = beta.unsqueeze(-1) * (v - (k.unsqueeze(-1) * state).sum(-2))
    state = state + k.unsqueeze(-1) * u.unsqueeze(-2)
    return (q.unsqueeze(-1) * state).sum(-2), state


def delta_rule_chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                       chunk: int = 64, initial_state: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """The whole sequence by chunks → (o (batch, heads, L, d_v), final state)."""
    bsz, h, L, dk = q.shape
    dv = v.shape[-1]
    if (k.shape != q.shape or v.shape != (bsz, h, L, dv) or g.shape != (bsz, h, L)
            or beta.shape != g.shape
            or (initial_state is not None and initial_state.shape != (bsz, h, dk, dv))):
        raise ShapeError(f"delta rule: q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)} "
                         f"g{tuple(g.shape)} beta{tuple(beta.shape)} do not fit")
    L, (q, k, v, g, beta) = pad_to_chunks(chunk, q, k, v, g, beta)
    n = q.shape[2] // chunk
    qc, kc, vc = (t.reshape(bsz, h, n, chunk, t.shape[-1]) for t in (q, k, v))
    b = g.reshape(bsz, h, n, chunk).cumsum(-1)
    bc = beta.reshape(bsz, h, n, chunk, 1)
    decay = decay_matrix(b)
    strict = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril(-1)
    A = (bc * (kc @ kc.mT) * decay).masked_fill(~strict, 0.0)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    rhs = torch.cat([bc * vc, bc * b.exp().unsqueeze(-1) * kc], dim=-1)
    solved = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
    U_free, W = solved.split([dv, dk], dim=-1)
    attn = (qc @ kc.mT) * decay
    q_in = qc * b.exp().unsqueeze(-1)
    k_out = kc * (b[..., -1:] - b).exp().unsqueeze(-1)
    chunk_decay = b[..., -1].exp()
    S = q.new_zeros(bsz, h, dk, dv) if initial_state is None else initial_state
    outs = []
    for c in range(n):
        U = U_free[:, :, c] - W[:, :, c] @ S
        outs.append(q_in[:, :, c] @ S + attn[:, :, c] @ U)
        S = chunk_decay[:, :, c, None, None] * S + k_out[:, :, c].mT @ U
    o = torch.stack(outs, dim=2).reshape(bsz, h, n * chunk, dv)
    return o[:, :, :L], S
