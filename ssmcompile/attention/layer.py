"""A linear-attention mixer (RetNet / simple GLA / Gated DeltaNet) with step and chunked forms.

Maps (batch, L, d_model) → (batch, L, d_model); norm and residual belong to the model around it
(``lm.py``). Data flow, per head h (flash-linear-attention's layout and defaults):

    q, k, v = W_q x, W_k x, W_v x                      (heads·d_k, heads·d_k, heads·d_v)
    q, k, v = SiLU(causal depthwise conv(·))           (``conv_size`` taps; skipped when 0)
    q, k = q/‖q‖, k/‖k‖ per head                       (``qk_norm``)
    q = scale · q
    decay  retnet: g_h = log γ_h,  γ_h = 1 − 2^(−5−h)  (a buffer: fixed, as in RetNet)
           gla:    g_t = logsigmoid(W_gk x) / gate_normalizer
           gated_delta: g_t = −exp(A_log)·softplus(W_a x + dt_bias),  β_t = sigmoid(W_b x)
    o = linear attention (scalar_decay / delta_rule kernels)
    o = RMSNorm_dv(o) ⊙ SiLU(W_g x)                    (``output_gate``)
    y = W_o o

``forward`` runs the chunked form; ``initial_state`` / ``step`` run one token with the state
(conv window (batch, heads·(2·d_k + d_v), conv_size − 1), S (batch, heads, d_k, d_v)).
``features(x)`` returns what enters the recurrence (the calibration reads it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..selective.mamba import causal_conv, conv_step
from .config import LinearAttentionConfig
from .delta_rule import delta_rule_chunked, delta_rule_step
from .scalar_decay import scalar_decay_chunked, scalar_decay_step

__all__ = ["Features", "LinearAttention", "State"]

# (conv window (batch, heads·(2·d_k + d_v), conv_size − 1) or an empty (batch, 0, 0), S).
State = tuple[Tensor, Tensor]


class Features(NamedTuple):
    """What enters the recurrence. q, k (batch, heads, L, d_k) (q already scaled); v
    (batch, heads, L, d_v); g (batch, heads, L) log-decay; beta (batch, heads, L) or None."""

    q: Tensor
    k: Tensor
    v: Tensor
    g: Tensor
    beta: Tensor | None


def _heads(x: Tensor, heads: int) -> Tensor:
    """(batch, L, heads·d) → (batch, heads, L, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class LinearAttention(nn.Module):
    """Parameters: ``q_proj``, ``k_proj`` (heads·d_k, d_model), ``v_proj`` (heads·d_v,
    d_model), ``conv`` (depthwise over q|k|v channels, when ``conv_size``), the decay's
    (``gk_proj`` | ``a_proj``, ``A_log``, ``dt_bias``, ``b_proj``), ``g_proj`` and ``o_norm``
    (when ``output_gate``), ``o_proj`` (d_model, heads·d_v)."""

    def __init__(self, config: LinearAttentionConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = c = config
        H, dk, dv, D = c.heads, c.key_dim, c.value_dim, c.d_model
        self.q_proj = nn.Linear(D, H * dk, bias=False, **kw)
        self.k_proj = nn.Linear(D, H * dk, bias=False, **kw)
        self.v_proj = nn.Linear(D, H * dv, bias=False, **kw)
        if c.conv_size:
            ch = H * (2 * dk + dv)
            self.conv = nn.Conv1d(ch, ch, c.conv_size, groups=ch, padding=c.conv_size - 1,
                                  bias=False, **kw)
        if c.kind == "retnet":
            gamma = 1.0 - torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))
            self.register_buffer("log_gamma", gamma.log().to(
                device=device, dtype=dtype or torch.get_default_dtype()))
        elif c.kind == "gla":
            self.gk_proj = nn.Linear(D, H, bias=True, **kw)
        else:
            self.a_proj = nn.Linear(D, H, bias=False, **kw)
            self.b_proj = nn.Linear(D, H, bias=False, **kw)
            self.A_log = nn.Parameter(torch.empty(H, **kw).uniform_(1.0, 16.0).log())
            dt = torch.empty(H, **kw).uniform_(-6.9, -2.3).exp()  # Δ in [1e-3, 0.1], as Mamba
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        if c.output_gate:
            self.g_proj = nn.Linear(D, H * dv, bias=False, **kw)
            self.o_norm = nn.RMSNorm(dv, eps=1e-6, **kw)
        self.o_proj = nn.Linear(H * dv, D, bias=False, **kw)

    @property
    def state_dim(self) -> int:
        """d_k per head: the key dimension reduction shrinks."""
        return int(self.q_proj.weight.shape[0]) // self.config.heads

    def extra_repr(self) -> str:
        c = self.config
        return (f"kind={c.kind}, d_model={c.d_model}, heads={c.heads}, key_dim={self.state_dim}, "
                f"value_dim={c.value_dim}, conv_size={c.conv_size}, qk_norm={c.qk_norm}")

    def _split(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        H, dk = self.config.heads, self.state_dim
        return qkv.split([H * dk, H * dk, H * self.config.value_dim], dim=-1)

    def _decay(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Log-decay g (..., heads) and β (..., heads) or None, from x (..., d_model)."""
        c = self.config
        if c.kind == "retnet":
            return self.log_gamma.expand(*x.shape[:-1], c.heads), None
        if c.kind == "gla":
            return F.logsigmoid(self.gk_proj(x)) / c.gate_normalizer, None
        g = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)
        return g, torch.sigmoid(self.b_proj(x))

    def _qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        if self.config.qk_norm:
            q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
        return q * self.config.scale, k

    def features(self, x: Tensor) -> Features:
        """The recurrence's inputs for x (batch, L, d_model) (see :class:`Features`)."""
        qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)
        if self.config.conv_size:
            qkv = F.silu(causal_conv(self.conv, qkv))
        H = self.config.heads
        q, k, v = (_heads(t, H) for t in self._split(qkv))
        q, k = self._qk(q, k)
        g, beta = self._decay(x)
        return Features(q, k, v, g.transpose(1, 2),
                        None if beta is None else beta.transpose(1, 2))

    def _read_out(self, o: Tensor, x: Tensor) -> Tensor:
        """o (..., heads, d_v), x (..., d_model) → (..., d_model)."""
        if self.config.output_gate:
            gate = self.g_proj(x).unflatten(-1, (self.config.heads, -1))
            o = self.o_norm(o) * F.silu(gate)
        return self.o_proj(o.flatten(-2))

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, L, d_model) → (batch, L, d_model), by the chunked form."""
        f = self.features(x)
        chunk = self.config.chunk_size
        if f.beta is None:
            o, _ = scalar_decay_chunked(f.q, f.k, f.v, f.g, chunk)
        else:
            o, _ = delta_rule_chunked(f.q, f.k, f.v, f.g, f.beta, chunk)
        return self._read_out(o.transpose(1, 2), x)

    def initial_state(self, batch_size: int) -> State:
        """Zeros: (conv window, S (batch, heads, d_k, d_v)); see the module docstring."""
        w, c = self.q_proj.weight, self.config
        taps = max(c.conv_size - 1, 0)
        channels = c.heads * (2 * self.state_dim + c.value_dim) if taps else 0
        return (w.new_zeros(batch_size, channels, taps),
                w.new_zeros(batch_size, c.heads, self.state_dim, c.value_dim))

    def step(self, x_k: Tensor, state: State) -> tuple[Tensor, State]:
        """One token: x_k (batch, d_model), state as :meth:`initial_state` → (y_k, state)."""
        window, S = state
        H = self.config.heads
        qkv = torch.cat([self.q_proj(x_k), self.k_proj(x_k), self.v_proj(x_k)], dim=-1)
        if self.config.conv_size:
            qkv, window = conv_step(self.conv, qkv, window)
            qkv = F.silu(qkv)
        q, k, v = (t.unflatten(-1, (H, -1)) for t in self._split(qkv))
        q, k = self._qk(q, k)
        g, beta = self._decay(x_k)
        if beta is None:
            o, S = scalar_decay_step(q, k, v, g, S)
        else:
            o, S = delta_rule_step(q, k, v, g, beta, S)
        return self._read_out(o, x_k), (window, S)
