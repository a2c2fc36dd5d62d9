"""Our blocks standing in for third-party Mamba mixers, for export.

Hugging Face's ``MambaMixer`` and mambapy's ``MambaBlock`` are Mamba-1 mixers with exactly the
parameters of :class:`~ssmcompile.selective.Mamba1Block` (``in_proj``, ``conv1d``, ``x_proj``,
``dt_proj``, ``A_log``, ``D``, ``out_proj``), so a copy of their weights into our block computes
the same map on our selective-scan op, which exports as one ONNX ``Scan``.
:class:`LoweredMixer` accepts the library's call (hidden states plus cache and mask keywords), so
the library's model runs unchanged around it; a cache or padding mask is refused: an exported
sequence graph has neither.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import MatchError


class LoweredMixer(nn.Module):
    """``block`` called the way the third-party model calls its mixer."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    @property
    def state_dim(self) -> int:
        return self.block.state_dim

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        extra = [v for v in (*args, *kwargs.values()) if v is not None]
        if extra:
            raise MatchError("a lowered mixer runs whole sequences only (no cache, no padding "
                             "mask): export with use_cache=False")
        return self.block(hidden_states)


def _weightless_rms(x: Tensor, eps: float) -> Tensor:
    import torch

    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def _falcon_block(base: type, eps: float) -> type:
    """``base`` (our Mamba-1 block) with FalconMamba's weightless RMS norms on Δ, B and C."""

    class FalconMamba1Block(base):
        def _selection(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            import torch
            import torch.nn.functional as F

            N, R = self.state_dim, self.config.rank
            dt, B, C = torch.split(self.x_proj(x), [R, N, N], dim=-1)
            dt, B, C = (_weightless_rms(t, eps) for t in (dt, B, C))
            return F.softplus(self.dt_proj(dt)), B, C

    return FalconMamba1Block


def mamba1_from(mixer: nn.Module, *, d_model: int, d_state: int, d_conv: int, d_inner: int,
                dt_rank: int, rms_eps: float | None = None) -> nn.Module:
    """A :class:`~ssmcompile.selective.Mamba1Block` holding ``mixer``'s weights (same names),
    on its device and dtype, wrapped in :class:`LoweredMixer`; with ``rms_eps``, the block
    also applies FalconMamba's weightless RMS norms to Δ, B and C."""
    from ..selective import Mamba1Block, Mamba1Config

    if rms_eps is not None:
        Mamba1Block = _falcon_block(Mamba1Block, rms_eps)  # noqa: N806

    if d_inner % d_model:
        raise MatchError(f"d_inner {d_inner} is not a multiple of d_model {d_model}")
    config = Mamba1Config(d_model=d_model, d_state=d_state, d_conv=d_conv,
                          expand=d_inner // d_model, dt_rank=dt_rank,
                          bias=mixer.in_proj.bias is not None,
                          conv_bias=mixer.conv1d.bias is not None)
    ref = mixer.A_log
    block = Mamba1Block(config, device="meta", dtype=ref.dtype).to_empty(device=ref.device)
    names = set(block.state_dict())
    state = {k: v for k, v in mixer.state_dict().items() if k in names}
    missing = names - set(state)
    if missing:
        raise MatchError(f"{type(mixer).__name__} lacks Mamba-1 parameters {sorted(missing)}")
    block.load_state_dict(state, strict=True)
    return LoweredMixer(block.train(mixer.training))


__all__ = ["LoweredMixer", "mamba1_from"]


class Mamba2Like(nn.Module):
    """Hugging Face's ``Mamba2Mixer`` sequence path on our selective-scan op (for export).

    Same parameters (``in_proj``, ``conv1d`` over x, B and C, ``dt_bias``, ``A_log``, ``D``, the
    gated RMS ``norm``, ``out_proj``; deep copies of the mixer's) and the same map as the
    mixer's torch path without a cache: gate, xBC, dt = in_proj(u); xBC = act(causal conv);
    Δ = clamp(softplus(dt + dt_bias), dt_limit); y = scan + D ⊙ x; out_proj(norm(y, gate)).
    """

    def __init__(self, mixer: nn.Module):
        super().__init__()
        import copy

        for name in ("in_proj", "conv1d", "norm", "out_proj"):
            setattr(self, name, copy.deepcopy(getattr(mixer, name)))
        for name in ("dt_bias", "A_log", "D"):
            setattr(self, name, nn.Parameter(getattr(mixer, name).detach().clone()))
        self.E, self.H, self.P = mixer.intermediate_size, mixer.num_heads, mixer.head_dim
        self.G, self.N = mixer.n_groups, mixer.ssm_state_size
        self.act = mixer.act
        self.dt_limit = tuple(float(v) for v in mixer.time_step_limit)

    @property
    def state_dim(self) -> int:
        return self.N

    def forward(self, u: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F

        from ..selective.mamba import causal_conv
        from ..selective.scan import selective_scan

        E, H, P, G, N = self.E, self.H, self.P, self.G, self.N
        gate, xbc, dt = torch.split(self.in_proj(u), [E, E + 2 * G * N, H], dim=-1)
        xbc = self.act(causal_conv(self.conv1d, xbc))
        x, B, C = torch.split(xbc, [E, G * N, G * N], dim=-1)
        delta = F.softplus(dt + self.dt_bias).clamp(self.dt_limit[0], self.dt_limit[1])
        A = -torch.exp(self.A_log.float()).to(x.dtype)
        y = selective_scan(x, delta.repeat_interleave(P, dim=-1),
                           A.repeat_interleave(P).unsqueeze(-1),
                           B.unflatten(-1, (G, N)), C.unflatten(-1, (G, N)))
        y = y + self.D.repeat_interleave(P) * x
        return self.out_proj(self.norm(y, gate).to(u.dtype))

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(conv window (batch, E + 2GN, d_conv − 1), SSM state (batch, E, N)), zeros."""
        w = self.A_log
        window = w.new_zeros(batch_size, self.conv1d.in_channels, self.conv1d.kernel_size[0] - 1)
        return window, w.new_zeros(batch_size, self.E, self.N)

    def step(self, u_k: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """One token: u_k (batch, d_model) → (y_k (batch, d_model), next state)."""
        import torch
        import torch.nn.functional as F

        from ..selective.mamba import conv_step

        window, h = state
        E, H, P, G, N = self.E, self.H, self.P, self.G, self.N
        gate, xbc, dt = torch.split(self.in_proj(u_k), [E, E + 2 * G * N, H], dim=-1)
        xbc, window = conv_step(self.conv1d, xbc, window)
        x, B, C = torch.split(self.act(xbc), [E, G * N, G * N], dim=-1)
        d = F.softplus(dt + self.dt_bias).clamp(*self.dt_limit).repeat_interleave(P, dim=-1)
        a = torch.exp(d * -torch.exp(self.A_log.float()).to(x.dtype).repeat_interleave(P))
        B_c = B.unflatten(-1, (G, N)).repeat_interleave(E // G, dim=-2)  # (batch, E, N)
        C_c = C.unflatten(-1, (G, N)).repeat_interleave(E // G, dim=-2)
        h = a.unsqueeze(-1) * h + (d * x).unsqueeze(-1) * B_c
        y = (h * C_c).sum(-1) + self.D.repeat_interleave(P) * x
        return self.out_proj(self.norm(y, gate).to(u_k.dtype)), (window, h)


__all__ += ["Mamba2Like"]
