"""Adapter for mambapy's ``mambapy.mamba.MambaBlock`` (kind ``mambapy-mamba``; data-driven).

Found by class name through the bundle table (``ssmcompile.thirdparty``): a model that holds a
``mambapy.mamba.Mamba`` is analysed and reduced with no register call, and importing
ssmcompile never imports mambapy (this module does not either: the block is read through its
attributes).

mambapy's block is a Mamba-1 mixer with the parameter names of ``mamba_ssm``: per-channel
diagonal A = −exp(A_log) (d_inner, N), ``x_proj`` emitting [Δ logit (dt_rank) | B (N) | C (N)]
and ``dt_proj``. Calibration: the Mamba-1 Gramian estimate
(``calibration.diagonal_decay_gramians``) from the Δ_t, B_t, C_t the block computes on its
captured input. Reduction: as for our ``Mamba1Block``, a non-diagonal balancing transform
would break the per-state decays, so the block keeps the ``r`` state indices with the largest
share of the kept balanced energy (``index_importance``) and deletes the rest: columns of
``A_log``, B and C rows of ``x_proj``. At full rank nothing is deleted and the block is
unchanged bit for bit; below it the error is measured by verification, never certified.

With ``inner_layernorms=True`` (Jamba style) B and C pass through RMS norms over the state
dimension: their weights are sliced with the kept indices, but the normalisation then runs over
r entries instead of N, which rescales the kept states by a token-dependent factor (as for
FalconMamba, see ``hf_falcon_mamba``): still exact at full rank, a second approximation below.

The rebuilt block is a NEW ``MambaBlock`` with a config copy whose ``d_state = r`` (other
blocks sharing the original config are untouched), built on the meta device (no RNG draw),
with the original's dtype, device, train mode, ``requires_grad`` and parameter attributes
(``_no_weight_decay``). ``Mamba.config`` keeps the original ``d_state``: a reduced model is
reloaded into ``Mamba(dataclasses.replace(config, d_state=r))`` with ``load_state_dict``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MatchError, ShapeError
from ..numerics.system import LTISystem, TruncationResult
from ..selective.adapters import CalibrationOptions, _SelectiveAdapter, keep_indices
from ..selective.calibration import diagonal_decay_gramians, surrogate_system
from .hf_mamba2 import rebuild_like

__all__ = ["MambapyBlockAdapter", "mambapy_signals", "select_mambapy_states"]

_NEEDED = ("in_proj", "conv1d", "x_proj", "dt_proj", "A_log", "D", "out_proj", "config",
           "_apply_layernorms")


def _check_block(block: nn.Module) -> None:
    if not all(hasattr(block, n) for n in _NEEDED) or not hasattr(block.config, "dt_rank"):
        raise MatchError(f"{type(block).__name__} is not a mambapy MambaBlock")


def mambapy_signals(block: nn.Module, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Δ (batch, L, d_inner), A (d_inner, N), B, C (batch, L, N) of a mambapy ``MambaBlock``
    for its input ``u`` (batch, L, d_model), as its forward computes them (inner layer norms
    included)."""
    _check_block(block)
    if u.ndim != 3:
        raise ShapeError(f"calibration input must be (batch, L, d_model), got {tuple(u.shape)}")
    L, N, R = u.shape[1], int(block.A_log.shape[-1]), int(block.config.dt_rank)
    with torch.no_grad():
        x, _ = block.in_proj(u).chunk(2, dim=-1)
        x = F.silu(block.conv1d(x.transpose(1, 2))[..., :L]).transpose(1, 2)
        dt, B, C = torch.split(block.x_proj(x), [R, N, N], dim=-1)
        dt, B, C = block._apply_layernorms(dt, B, C)
        delta = F.softplus(dt @ block.dt_proj.weight.T + block.dt_proj.bias)
    return delta, -torch.exp(block.A_log.detach().float()), B, C


def select_mambapy_states(block: nn.Module, keep: Tensor) -> nn.Module:
    """A new ``MambaBlock`` that keeps the state indices ``keep`` ((r,) int64, ascending)."""
    _check_block(block)
    N, R = int(block.A_log.shape[-1]), int(block.config.dt_rank)
    keep = keep.to(torch.int64).cpu()
    if keep.ndim != 1 or not 1 <= keep.numel() <= N or bool((keep < 0).any()) \
            or bool((keep >= N).any()):
        raise ShapeError(f"mambapy-mamba: keep must be 1..{N} indices in 0..{N - 1}")
    rows = torch.cat([torch.arange(R), R + keep, R + N + keep])
    dev = block.A_log.device
    values = {"A_log": block.A_log.detach()[:, keep.to(dev)],
              "x_proj.weight": block.x_proj.weight.detach()[rows.to(dev)]}
    for norm in ("B_layernorm", "C_layernorm"):
        weight = getattr(getattr(block, norm, None), "weight", None)
        if isinstance(weight, Tensor):
            values[f"{norm}.weight"] = weight.detach()[keep.to(weight.device)]
    config = copy.copy(block.config)  # a dataclass: no __post_init__ re-run, dt_rank kept
    config.d_state = int(keep.numel())
    return rebuild_like(block, lambda: type(block)(config), values)


class MambapyBlockAdapter(_SelectiveAdapter):
    """Core adapter for one mambapy ``MambaBlock`` (Mamba-1 structure, index selection)."""

    kind = "mambapy-mamba"

    def __init__(self, options: CalibrationOptions | None = None) -> None:
        super().__init__(options)

    def state_dim(self, module: nn.Module) -> int:
        _check_block(module)
        return int(module.A_log.shape[-1])

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        """Surrogate (A = 0, B = L_P, C = L_Qᵀ), batch (groups,), N × N, float64."""
        delta, A, B, C = mambapy_signals(module, _first(u, self.options))
        return surrogate_system(*diagonal_decay_gramians(delta, A, B, C, self.options.groups))

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult) -> nn.Module:
        N = self.state_dim(module)
        if not isinstance(result, TruncationResult) or result.T.shape[-2] != N:
            raise ShapeError(f"{self.kind}: truncation result does not belong to a block with "
                             f"N = {N}")
        return select_mambapy_states(module, keep_indices(result))

    def lower(self, module: nn.Module) -> nn.Module:
        """Our Mamba-1 block with this block's weights (for export; the same map)."""
        from .lowered import mamba1_from

        _check_block(module)
        cfg = module.config
        if getattr(cfg, "inner_layernorms", False):
            raise MatchError("a mambapy block with inner_layernorms has no lowering to our "
                             "Mamba-1 block")
        return mamba1_from(module, d_model=cfg.d_model, d_state=int(module.A_log.shape[-1]),
                           d_conv=cfg.d_conv, d_inner=cfg.d_inner, dt_rank=cfg.dt_rank)


def _first(u: Tensor, options: CalibrationOptions) -> Tensor:
    if u.ndim != 3:
        raise ShapeError(f"calibration input must be (batch, L, d_model), got {tuple(u.shape)}")
    return u[: options.max_sequences]
