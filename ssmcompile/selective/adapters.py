"""Adapters that let the compiler core reduce the state dimension N of Mamba blocks.

Contract (beyond ``BlockAdapter``): ``certified = False`` (a time-varying system has no H∞
bound: verify reports the measured error only); ``read`` raises MatchError (no data, no
system); ``calibrate(module, u)`` estimates Gramians from the block's input u (batch, L, d_model)
and returns the surrogate LTI system of ``calibration.surrogate_system``;
``rebuild_from_truncation(module, result)`` returns a NEW, smaller block (the original is
untouched) from the ``TruncationResult`` of that surrogate.

- Mamba-2 structure: A_t = a_t·I commutes with every change of state basis, so the balancing
  maps fold exactly into ``bc_proj``: B-rows ← Tinv·W_B, C-rows ← Tᵀ·W_C, per group. At full
  rank T·Tinv = I and the block computes the same function (up to float error).
- Mamba-1 structure: a non-diagonal T would break the per-state decays A[d, n], so the block
  keeps ``result.rank`` of its state *indices* and deletes the rest (columns of A_log, rows of
  x_proj's B and C parts). Indices are ranked by their share of the kept balanced energy,
  :func:`index_importance`. At full rank nothing is deleted and the block is unchanged exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..adapters.base import register_block, require_type
from ..errors import MatchError, ShapeError
from ..numerics.system import LTISystem, TruncationResult
from .calibration import diagonal_decay_gramians, scalar_decay_gramians, surrogate_system
from .mamba import Mamba1Block, Mamba2Block

__all__ = ["CalibrationOptions", "Mamba1Adapter", "Mamba2Adapter", "index_importance",
           "keep_indices", "register_mamba_adapters"]


@dataclass(frozen=True)
class CalibrationOptions:
    """``max_sequences``: calibrate on at most this many sequences of u (the Mamba-1 estimator
    costs O(batch·L·d_inner·N²)); ``groups``: Mamba-1 channel groups (one surrogate system each;
    must divide d_inner)."""

    max_sequences: int = 8
    groups: int = 1


def index_importance(result: TruncationResult) -> Tensor:
    """Share of the kept balanced energy carried by each state index, summed over the batch.

    c_n = Σ_batch Σ_{i≤r} σ_i·|T[n, i]·Tinv[i, n]|: for diagonal Gramians it is σ for the r
    indices balanced truncation keeps and 0 for the others; in general Σ_n of the signed terms
    is Σ_{i≤r} σ_i. Shapes: T (..., N, r), Tinv (..., r, N), hsv (..., N) → (N,) float64.
    """
    r = result.rank
    sigma = result.hsv[..., :r].to(torch.float64)
    share = (result.T * result.Tinv.mT).abs().to(torch.float64)  # (..., N, r)
    return (share * sigma.unsqueeze(-2)).sum(-1).reshape(-1, share.shape[-2]).sum(0)


def keep_indices(result: TruncationResult) -> Tensor:
    """The ``result.rank`` most important state indices (:func:`index_importance`), ascending."""
    c = index_importance(result)
    return torch.topk(c, result.rank).indices.sort().values


def _first(u: Tensor, options: CalibrationOptions) -> Tensor:
    if u.ndim != 3:
        raise ShapeError(f"calibration input must be (batch, L, d_model), got {tuple(u.shape)}")
    return u[: options.max_sequences]


def _fresh(module: nn.Module, config) -> nn.Module:
    """An empty block of ``type(module)`` for ``config`` on the module's device and dtype (built
    on meta: no RNG draw, so a mid-training rebuild does not shift the data stream)."""
    p = next(module.parameters())
    new = type(module)(config, device="meta", dtype=p.dtype).to_empty(device=p.device)
    return new.train(module.training)


def _copy_into(new: nn.Module, values: dict[str, Tensor], like: nn.Module) -> nn.Module:
    old = dict(like.named_parameters())
    with torch.no_grad():
        for name, param in new.named_parameters():
            param.copy_(values.get(name, old[name]).to(param.dtype))
            param.requires_grad_(old[name].requires_grad)
    return new


def _check_result(result: TruncationResult, n: int, kind: str) -> None:
    if not isinstance(result, TruncationResult) or result.T.shape[-2] != n:
        raise ShapeError(f"{kind}: truncation result does not belong to a block with N = {n}")


class _SelectiveAdapter:
    certified = False
    kind = "selective"
    block_type: type[nn.Module] = nn.Module

    def __init__(self, options: CalibrationOptions | None = None) -> None:
        self.options = options or CalibrationOptions()

    def state_dim(self, module: nn.Module) -> int:
        require_type(module, self.block_type, self.kind)
        return int(module.state_dim)

    def read(self, module: nn.Module) -> LTISystem:
        raise MatchError(f"{self.kind} block is time-varying and needs calibration data: "
                         "use calibrate(module, u) with the block's inputs")

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        raise MatchError(f"{self.kind} block is rebuilt from a TruncationResult (T/Tinv), not "
                         "from a system: use rebuild_from_truncation")


class Mamba1Adapter(_SelectiveAdapter):
    kind = "mamba1"
    block_type = Mamba1Block

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        """Surrogate (A = 0, B = L_P, C = L_Qᵀ), batch (groups,), N × N, float64."""
        require_type(module, Mamba1Block, self.kind)
        with torch.no_grad():
            _, _, delta, A, B, C = module.ssm_inputs(_first(u, self.options))
        P, Q = diagonal_decay_gramians(delta, A, B[:, :, 0], C[:, :, 0], self.options.groups)
        return surrogate_system(P, Q)

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult) -> nn.Module:
        require_type(module, Mamba1Block, self.kind)
        N = module.state_dim
        _check_result(result, N, self.kind)
        keep = keep_indices(result).to(module.A_log.device)
        return select_mamba1_states(module, keep)


def select_mamba1_states(module: Mamba1Block, keep: Tensor) -> Mamba1Block:
    """A new Mamba-1 block that keeps the state indices ``keep`` (ascending, (r,) int64)."""
    N, R = module.state_dim, module.config.rank
    rows = torch.cat([torch.arange(R), R + keep.cpu(), R + N + keep.cpu()]).to(keep.device)
    new = _fresh(module, dataclasses.replace(module.config, d_state=int(keep.numel())))
    values = {"A_log": module.A_log.detach()[:, keep],
              "x_proj.weight": module.x_proj.weight.detach()[rows]}
    return _copy_into(new, values, module)


class Mamba2Adapter(_SelectiveAdapter):
    kind = "mamba2"
    block_type = Mamba2Block

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        """Surrogate (A = 0, B = L_P, C = L_Qᵀ), batch (n_groups,), N × N, float64."""
        require_type(module, Mamba2Block, self.kind)
        with torch.no_grad():
            _, _, delta, A, B, C = module.ssm_inputs(_first(u, self.options))
        return surrogate_system(*scalar_decay_gramians(delta, A, B, C))

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult) -> nn.Module:
        require_type(module, Mamba2Block, self.kind)
        G, N = module.config.n_groups, module.state_dim
        _check_result(result, N, self.kind)
        T, Tinv = result.T, result.Tinv
        if T.is_complex() or Tinv.is_complex():
            raise ShapeError("mamba2: T/Tinv must be real (truncate a dense real surrogate)")
        T = T.to(torch.float64).expand(G, N, result.rank)
        Tinv = Tinv.to(torch.float64).expand(G, result.rank, N)
        W = module.bc_proj.weight.detach().to(torch.float64).reshape(2, G, N, -1)
        folded = torch.stack([Tinv @ W[0], T.mT @ W[1]]).reshape(2 * G * result.rank, -1)
        new = _fresh(module, dataclasses.replace(module.config, d_state=result.rank))
        return _copy_into(new, {"bc_proj.weight": folded}, module)


def register_mamba_adapters(options: CalibrationOptions | None = None) -> None:
    """Register both adapters with the core (done on import of ``ssmcompile.selective``;
    call again to change the calibration options)."""
    register_block(Mamba1Block, Mamba1Adapter(options))
    register_block(Mamba2Block, Mamba2Adapter(options))
