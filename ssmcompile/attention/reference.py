"""Readable twin of the linear-attention kernels: the recurrence as written, one step at a time.

For tests only (O(L) Python steps, explicit d_k × d_k transition matrices). Shapes as in
:mod:`ssmcompile.attention.scalar_decay`; ``beta`` given → the gated delta rule
S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, else S_t = α_t S_{t−1} + k_t v_tᵀ;
o_t = S_tᵀ q_t, α_t = exp(g_t).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_attention_reference"]


def linear_attention_reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor,
                               beta: Tensor | None = None,
                               initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """→ (o (batch, heads, L, d_v), final state (batch, heads, d_k, d_v))."""
    bsz, h, L, dk = q.shape
    S = (q.new_zeros(bsz, h, dk, v.shape[-1]) if initial_state is None
         else initial_state.clone())
    eye = torch.eye(dk, dtype=q.dtype, device=q.device)
    outs = []
    for t in range(L):
        kt, vt, alpha = k[:, :, t], v[:, :, t], g[:, :, t].exp()[..., None, None]
        outer = kt[..., :, None] * vt[..., None, :]  # k_t v_tᵀ
        if beta is None:
            S = alpha * S + outer
        else:
            bt = beta[:, :, t][..., None, None]
            transition = alpha * (eye - bt * kt[..., :, None] * kt[..., None, :])
            S = transition @ S + bt * outer
        outs.append((S.mT @ q[:, :, t, :, None]).squeeze(-1))
    return torch.stack(outs, dim=2), S
