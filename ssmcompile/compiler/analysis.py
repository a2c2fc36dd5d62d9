"""Per-block building blocks the concrete passes share: analyse, rewrite, measure.

They live in the core (not in ``passes/``) so that any pass — ours or a user's — analyses and
rewrites blocks the same way, and so the rewrite can analyse on demand.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..numerics import energy_rank, hankel_singular_values, truncate
from ..numerics.system import TruncationResult
from .activations import block_inputs
from .state import META_KEY, Block, BlockAnalysis, CompileState

SUGGESTED_TAUS = (0.01, 0.02, 0.05, 0.1)


def analyse_block(state: CompileState, block: Block) -> BlockAnalysis:
    """Gramians → HSVs of one block of the *current* model; cached in ``state.analyses`` and in
    the block's fx node meta."""
    module = state.model.get_submodule(block.name)
    if is_calibrated(block):
        # Time-varying (selective) blocks have no fixed system: the adapter estimates Gramians
        # from the inputs the block sees on the example batch and returns a surrogate system.
        u = block_inputs(state.model, [block.name], state.example_inputs)[block.name]
        system = block.adapter.calibrate(module, u)
    else:
        system = block.adapter.read(module)
    hsv = hankel_singular_values(system.A, system.B, system.C)
    total = hsv.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    energy = (hsv.cumsum(dim=-1) / total).reshape(-1, hsv.shape[-1]).amin(dim=0)
    suggested = tuple((tau, energy_rank(hsv, tau)) for tau in SUGGESTED_TAUS)
    result = BlockAnalysis(block.name, block.kind, system.state_dim, hsv, energy, suggested,
                           system)
    state.analyses[block.name] = result
    if block.node is not None:
        block.node.meta[META_KEY] = result
    return result


def is_calibrated(block: Block) -> bool:
    """True for adapters that estimate Gramians from data (``calibrate``) instead of reading an
    exact LTI system; their truncation error is measured, not certified."""
    return hasattr(block.adapter, "calibrate")


def is_certified(block: Block) -> bool:
    return bool(getattr(block.adapter, "certified", True)) and not is_calibrated(block)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """``model`` with the submodule ``name`` replaced ('' replaces the model itself)."""
    if name == "":
        return new
    model.set_submodule(name, new)
    return model


def rewrite_block(state: CompileState, block: Block, rank: int) -> TruncationResult:
    """Balanced-truncate one block of ``state.model`` (which the caller has already copied)."""
    analysis = state.analyses.get(block.name) or analyse_block(state, block)
    # clip: a rank above the numerical minimal order has no balanced realisation; the states
    # beyond it carry σ ≈ 0, so dropping them changes nothing measurable.
    result = truncate(analysis.system, rank, clip=True)
    module = state.model.get_submodule(block.name)
    if hasattr(block.adapter, "rebuild_from_truncation"):
        new = block.adapter.rebuild_from_truncation(module, result)  # needs T / Tinv
    else:
        new = block.adapter.rebuild(module, result.system)
    state.model = replace_module(state.model, block.name, new)
    state.rewrites[block.name] = result
    state.bounds[block.name] = state.bounds.get(block.name, 0.0) + float(result.bound.max())
    return result


def l2_gain_error(original: nn.Module, reduced: nn.Module, u: torch.Tensor) -> float:
    """max over the batch of ‖y − y_r‖₂ / ‖u‖₂ (norms over time and channels), in float64.

    For a causal LTI block started at rest, this is bounded by ‖G − G_r‖∞ ≤ 2·Σ tail.
    """
    a = copy.deepcopy(original).double().eval()
    b = copy.deepcopy(reduced).double().eval()
    u = u.double()
    with torch.no_grad():
        err = (a(u) - b(u)).flatten(1).norm(dim=1)
    scale = u.flatten(1).norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return float((err / scale).max())
