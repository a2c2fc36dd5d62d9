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


def mamba1_from(mixer: nn.Module, *, d_model: int, d_state: int, d_conv: int, d_inner: int,
                dt_rank: int) -> nn.Module:
    """A :class:`~ssmcompile.selective.Mamba1Block` holding ``mixer``'s weights (same names),
    on its device and dtype, wrapped in :class:`LoweredMixer`."""
    from ..selective import Mamba1Block, Mamba1Config

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
