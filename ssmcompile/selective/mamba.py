"""Mamba blocks in plain PyTorch around the selective-scan op, with an explicit step mode.

Both blocks map (batch, L, d_model) → (batch, L, d_model) — the "mixer": norm and residual
belong to the model around them (``lm.py``). Data flow, d_inner = expand·d_model:

    x, z = in_proj(u)                          (Mamba-2 also emits one Δ logit per head)
    x = SiLU(causal depthwise conv(x))         (short, d_conv taps)
    Δ_t, B_t, C_t from x (linear projections)  (selection: input dependent)
    y = selective_scan(x, Δ, A, B, C) + D ⊙ x
    out = out_proj(y ⊙ SiLU(z))

- :class:`Mamba1Block` (Mamba-1 structure; parameter names and layout as in ``mamba_ssm`` and
  Hugging Face's ``MambaMixer``): per-channel diagonal A (d_inner, N); ``x_proj`` produces a
  low-rank Δ logit and one B_t, C_t ∈ R^N shared by all channels.
- :class:`Mamba2Block` (Mamba-2 state structure): a scalar decay per head, A_t = a_t·I with
  a_t = exp(Δ_t[h]·A_h); B_t, C_t ∈ R^N per group of heads (n_groups = 1: shared, = heads: per
  head). Unlike the reference Mamba-2, B_t and C_t are a *linear* projection (``bc_proj``) of the
  convolved x, as Mamba-1's are, and there is no gated RMSNorm: the reference convolves B and C
  per state coordinate and applies SiLU, which would stop a change of state basis from being
  folded exactly into the weights (see ``adapters.py``).

``initial_state(batch)`` / ``step(u_k, state)`` run one token with state (conv window
(batch, channels, d_conv − 1), SSM state (batch, d_inner, N)); step outputs equal the sequence
outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .scan import selective_scan

# Step-mode state: (conv window (batch, d_inner, d_conv − 1), SSM state (batch, d_inner, N)).
State = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Mamba1Config:
    """Options of :class:`Mamba1Block`; ``dt_rank = 0`` means ⌈d_model / 16⌉ (Mamba's "auto")."""

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_floor: float = 1e-4
    bias: bool = False
    conv_bias: bool = True

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)


@dataclass(frozen=True)
class Mamba2Config:
    """Options of :class:`Mamba2Block`; heads = d_inner / head_dim, divisible by n_groups.
    The head decays A_h = exp(A_log_h) start uniform in ``a_init_range``."""

    d_model: int
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    head_dim: int = 16
    n_groups: int = 1
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_floor: float = 1e-4
    a_init_range: tuple[float, float] = (1.0, 16.0)
    bias: bool = False
    conv_bias: bool = True

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def heads(self) -> int:
        return self.d_inner // self.head_dim


def _dt_bias(size: int, cfg, kw) -> Tensor:
    """Inverse softplus of Δ drawn log-uniformly in [dt_min, dt_max] (Mamba's init)."""
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    dt = torch.exp(torch.rand(size, **kw) * (hi - lo) + lo).clamp_min(cfg.dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def _conv(channels: int, cfg, kw) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, cfg.d_conv, groups=channels, padding=cfg.d_conv - 1,
                     bias=cfg.conv_bias, **kw)


def causal_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """Causal depthwise convolution. Shapes: x (batch, L, channels) → (batch, L, channels)."""
    return conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)


def conv_step(conv: nn.Conv1d, x_k: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
    """One step of :func:`causal_conv`. Shapes: x_k (batch, channels), window (batch, channels,
    d_conv − 1) = the previous inputs → (output (batch, channels), next window)."""
    full = torch.cat([window, x_k.unsqueeze(-1)], dim=-1)
    out = (full * conv.weight[:, 0, :]).sum(-1)
    if conv.bias is not None:
        out = out + conv.bias
    return out, full[..., 1:]


class Mamba1Block(nn.Module):
    """Mamba-1 mixer. Parameters: ``in_proj`` (2·d_inner, d_model), ``conv1d``, ``x_proj``
    (dt_rank + 2N, d_inner), ``dt_proj`` (d_inner, dt_rank) + bias, ``A_log`` (d_inner, N)
    with A = −exp(A_log), ``D`` (d_inner,), ``out_proj`` (d_model, d_inner)."""

    def __init__(self, config: Mamba1Config, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = cfg = config
        E, N, R = cfg.d_inner, cfg.d_state, cfg.rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * E, bias=cfg.bias, **kw)
        self.conv1d = _conv(E, cfg, kw)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False, **kw)
        self.dt_proj = nn.Linear(R, E, bias=True, **kw)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, **kw).expand(E, N).clone()))
        self.D = nn.Parameter(torch.ones(E, **kw))
        self.out_proj = nn.Linear(E, cfg.d_model, bias=cfg.bias, **kw)
        if self.A_log.device.type != "meta":
            with torch.no_grad():
                std = R**-0.5
                self.dt_proj.weight.uniform_(-std, std)
                self.dt_proj.bias.copy_(_dt_bias(E, cfg, kw))

    @property
    def state_dim(self) -> int:
        return int(self.A_log.shape[-1])

    def extra_repr(self) -> str:
        c = self.config
        return f"d_model={c.d_model}, d_inner={c.d_inner}, d_state={self.state_dim}"

    def _selection(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ (..., d_inner), B, C (..., N) from the convolved x (..., d_inner)."""
        N, R = self.state_dim, self.config.rank
        dt, B, C = torch.split(self.x_proj(x), [R, N, N], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def ssm_inputs(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(x, z, Δ, A, B, C) for the scan: x, z, Δ (batch, L, d_inner), A (d_inner, N),
        B, C (batch, L, 1, N). Shapes: u (batch, L, d_model)."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(causal_conv(self.conv1d, x))
        delta, B, C = self._selection(x)
        return x, z, delta, -torch.exp(self.A_log), B.unsqueeze(-2), C.unsqueeze(-2)

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, d_model) → (batch, L, d_model)."""
        x, z, delta, A, B, C = self.ssm_inputs(u)
        y = selective_scan(x, delta, A, B, C) + self.D * x
        return self.out_proj(y * F.silu(z))

    def initial_state(self, batch_size: int) -> State:
        """(conv window (batch, d_inner, d_conv − 1), SSM state (batch, d_inner, N)), zeros."""
        w = self.A_log
        E, K = self.config.d_inner, self.config.d_conv
        return w.new_zeros(batch_size, E, K - 1), w.new_zeros(batch_size, E, self.state_dim)

    def step(self, u_k: Tensor, state: State) -> tuple[Tensor, State]:
        """One token. u_k (batch, d_model), state as :meth:`initial_state` → (y_k, state)."""
        window, h = state
        x, z = self.in_proj(u_k).chunk(2, dim=-1)
        x, window = conv_step(self.conv1d, x, window)
        x = F.silu(x)
        delta, B, C = self._selection(x)
        h = torch.exp(delta.unsqueeze(-1) * -torch.exp(self.A_log)) * h
        h = h + (delta * x).unsqueeze(-1) * B.unsqueeze(-2)
        y = (h * C.unsqueeze(-2)).sum(-1) + self.D * x
        return self.out_proj(y * F.silu(z)), (window, h)


class Mamba2Block(nn.Module):
    """Mamba-2-structured mixer. Parameters: ``in_proj`` (2·d_inner + heads, d_model),
    ``conv1d`` over x, ``bc_proj`` (2·G·N, d_inner) producing B then C, ``dt_bias``, ``A_log``,
    ``D`` (heads,), ``out_proj`` (d_model, d_inner)."""

    def __init__(self, config: Mamba2Config, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = cfg = config
        E, H, G, N = cfg.d_inner, cfg.heads, cfg.n_groups, cfg.d_state
        if H * cfg.head_dim != E or H % G != 0:
            raise ValueError(f"d_inner {E} must be heads × head_dim and heads {H} divisible by "
                             f"n_groups {G}")
        self.in_proj = nn.Linear(cfg.d_model, 2 * E + H, bias=cfg.bias, **kw)
        self.conv1d = _conv(E, cfg, kw)
        self.bc_proj = nn.Linear(E, 2 * G * N, bias=False, **kw)
        lo, hi = cfg.a_init_range
        self.A_log = nn.Parameter(torch.log(torch.empty(H, **kw).uniform_(lo, hi)))
        self.dt_bias = nn.Parameter(_dt_bias(H, cfg, kw))
        self.D = nn.Parameter(torch.ones(H, **kw))
        self.out_proj = nn.Linear(E, cfg.d_model, bias=cfg.bias, **kw)

    @property
    def state_dim(self) -> int:
        return int(self.bc_proj.weight.shape[0]) // (2 * self.config.n_groups)

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, heads={c.heads}, head_dim={c.head_dim}, "
                f"n_groups={c.n_groups}, d_state={self.state_dim}")

    def _split(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.config.d_inner
        z, x, dt = torch.split(self.in_proj(u), [E, E, self.config.heads], dim=-1)
        return z, x, dt

    def _selection(self, x: Tensor, dt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ per head (..., heads), B, C (..., G, N) from the convolved x and the Δ logits."""
        G = self.config.n_groups
        B, C = self.bc_proj(x).unflatten(-1, (2, G, self.state_dim)).unbind(-3)
        return F.softplus(dt + self.dt_bias), B, C

    def ssm_inputs(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(x, z, Δ, A, B, C): x, z (batch, L, d_inner); Δ per head (batch, L, heads); A per head
        (heads,); B, C (batch, L, G, N). Shapes: u (batch, L, d_model)."""
        z, x, dt = self._split(u)
        x = F.silu(causal_conv(self.conv1d, x))
        delta, B, C = self._selection(x, dt)
        return x, z, delta, -torch.exp(self.A_log), B, C

    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, d_model) → (batch, L, d_model)."""
        x, z, delta, A, B, C = self.ssm_inputs(u)
        P = self.config.head_dim
        per_channel = delta.repeat_interleave(P, dim=-1)
        y = selective_scan(x, per_channel, A.repeat_interleave(P).unsqueeze(-1), B, C)
        y = y + self.D.repeat_interleave(P) * x
        return self.out_proj(y * F.silu(z))

    def initial_state(self, batch_size: int) -> State:
        """(conv window (batch, d_inner, d_conv − 1), SSM state (batch, d_inner, N)), zeros."""
        w = self.A_log
        E, K = self.config.d_inner, self.config.d_conv
        return w.new_zeros(batch_size, E, K - 1), w.new_zeros(batch_size, E, self.state_dim)

    def step(self, u_k: Tensor, state: State) -> tuple[Tensor, State]:
        """One token. u_k (batch, d_model), state as :meth:`initial_state` → (y_k, state)."""
        window, h = state
        cfg = self.config
        P, G, H = cfg.head_dim, cfg.n_groups, cfg.heads
        z, x, dt = self._split(u_k)
        x, window = conv_step(self.conv1d, x, window)
        x = F.silu(x)
        delta, B, C = self._selection(x, dt)
        d = delta.repeat_interleave(P, dim=-1)  # (batch, d_inner)
        a = torch.exp(d * -torch.exp(self.A_log).repeat_interleave(P))
        B_c = B.repeat_interleave(H // G * P, dim=-2)  # (batch, d_inner, N)
        C_c = C.repeat_interleave(H // G * P, dim=-2)
        h = a.unsqueeze(-1) * h + (d * x).unsqueeze(-1) * B_c
        y = (h * C_c).sum(-1) + self.D.repeat_interleave(P) * x
        return self.out_proj(y * F.silu(z)), (window, h)
