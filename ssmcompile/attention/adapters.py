"""The adapter that lets the compiler core reduce the key dimension d_k of linear attention.

Contract (as the selective adapters'): ``certified = False`` (time-varying, no H∞ bound: verify
reports the measured error only); ``read`` / ``rebuild`` raise MatchError; ``calibrate(module,
u)`` estimates per-head key Gramians (:func:`~ssmcompile.attention.gramians.key_gramians`) from
the block's input u (batch, L, d_model) and returns their surrogate LTI system (batch (heads,),
d_k × d_k, ``selective.calibration.surrogate_system``); ``rebuild_from_truncation(module,
result)`` writes the reduced key axis the layer's exact way (``reduction.py``).

Extras the core does not call yet: ``round_rank(rank, n)`` rounds a chosen rank up to
``options.multiple``; ``caveat(module)`` (read by ``analyse_block``) names the method, so the
report says which way each layer was reduced. :func:`reduce_key_dim` runs the whole reduction
without the passes (calibrate → balance → rank rule → rebuild).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..adapters.base import require_type
from ..errors import MatchError, RankError, ShapeError
from ..numerics import energy_rank, hankel_singular_values, truncate
from ..numerics.system import LTISystem, TruncationResult
from ..selective.calibration import surrogate_system
from .gramians import key_gramians
from .layer import LinearAttention
from .reduction import apply_key_maps, key_maps, round_rank

__all__ = ["KeyReductionOptions", "LinearAttentionAdapter", "reduce_key_dim"]


@dataclass(frozen=True)
class KeyReductionOptions:
    """``max_sequences``: calibrate on at most this many sequences; ``multiple``: reduced ranks
    are rounded up to a multiple of this (kernel tile minimums); ``value_weighted``: weight the
    reachability Gramian by the value power (see ``gramians.py``); ``method``: force
    ``"select"`` / ``"orthogonal"`` (must be exact for the layer) instead of its own best."""

    max_sequences: int = 8
    multiple: int = 1
    value_weighted: bool = True
    method: str | None = None


class LinearAttentionAdapter:
    certified = False
    kind = "linear-attention"

    def __init__(self, options: KeyReductionOptions | None = None) -> None:
        self.options = options or KeyReductionOptions()

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, LinearAttention, self.kind)
        return module.state_dim

    def read(self, module: nn.Module) -> LTISystem:
        raise MatchError("linear attention is time-varying and needs calibration data: "
                         "use calibrate(module, u) with the block's inputs")

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        raise MatchError("linear attention is rebuilt from a TruncationResult (T/Tinv), not "
                         "from a system: use rebuild_from_truncation")

    def method(self, module: nn.Module) -> str:
        require_type(module, LinearAttention, self.kind)
        return self.options.method or module.config.reduction_method

    def caveat(self, module: nn.Module) -> str:
        return (f"{module.config.kind} key dimension reduced by {self.method(module)!r} "
                f"(data-driven Gramians; error measured, not certified)")

    def round_rank(self, rank: int, n: int) -> int:
        return round_rank(rank, n, self.options.multiple)

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        """Surrogate (A = 0, B = L_P, C = L_Qᵀ), batch (heads,), d_k × d_k, float64."""
        require_type(module, LinearAttention, self.kind)
        if u.ndim != 3:
            raise ShapeError(f"calibration input must be (batch, L, d_model), got "
                             f"{tuple(u.shape)}")
        with torch.no_grad():
            f = module.features(u[: self.options.max_sequences])
        P, Q = key_gramians(f, value_weighted=self.options.value_weighted)
        return surrogate_system(P, Q)

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult
                                ) -> nn.Module:
        require_type(module, LinearAttention, self.kind)
        if not isinstance(result, TruncationResult) or result.T.shape[-2] != module.state_dim:
            raise ShapeError(f"{self.kind}: truncation result does not belong to a layer with "
                             f"d_k = {module.state_dim}")
        if result.T.ndim == 2:
            # A batch-free result (checkpoint replay's placeholder keeps states 0..r-1) means
            # the same map for every head, as the Mamba-2 adapter reads one for every group.
            H, (n, r) = module.config.heads, result.T.shape
            result = dataclasses.replace(result, T=result.T.expand(H, n, r),
                                         Tinv=result.Tinv.expand(H, r, n),
                                         hsv=result.hsv.expand(H, n))
        return apply_key_maps(module, key_maps(result, self.method(module)))


def reduce_key_dim(layer: LinearAttention, u: Tensor, *, rank: int | None = None,
                   tau: float | None = None,
                   options: KeyReductionOptions | None = None
                   ) -> tuple[LinearAttention, TruncationResult]:
    """Calibrate on ``u`` (batch, L, d_model), keep ``rank`` key directions (or the paper's
    energy rule at ``tau``), rounded up to ``options.multiple`` → (new layer, truncation)."""
    if (rank is None) == (tau is None):
        raise RankError("give exactly one of rank, tau")
    adapter = LinearAttentionAdapter(options)
    system = adapter.calibrate(layer, u)
    n = layer.state_dim
    chosen = rank if rank is not None else energy_rank(
        hankel_singular_values(system.A, system.B, system.C), tau)
    result = truncate(system, adapter.round_rank(chosen, n), clip=True)
    return adapter.rebuild_from_truncation(layer, result), result
