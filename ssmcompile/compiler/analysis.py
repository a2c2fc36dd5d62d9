"""Per-block building blocks the concrete passes share: analyse, rewrite, measure.

They live in the core (not in ``passes/``) so that any pass — ours or a user's — analyses and
rewrites blocks the same way, and so the rewrite can analyse on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..numerics import balancing_svd, energy_rank, truncate
from ..numerics.system import TruncationResult
from .activations import block_inputs
from .precision import at_precision, cast_inputs, noise_floor, primary_output, run_checked
from .state import META_KEY, Block, BlockAnalysis, BlockRecord, CompileState, Truncation

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
    caveat = getattr(block.adapter, "caveat", None)
    if caveat is not None:
        note = f"{block.name or '<model>'}: {caveat(module)}"
        if note not in state.notes:
            state.notes.append(note)
    # The full balancing SVD, not the HSVs alone: the truncation that usually follows needs its
    # vectors, and one SVD costs less than svdvals now plus an SVD then.
    balancing = balancing_svd(system.A, system.B, system.C)
    hsv = balancing.sigma
    total = hsv.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    energy = (hsv.cumsum(dim=-1) / total).reshape(-1, hsv.shape[-1]).amin(dim=0)
    suggested = tuple((tau, energy_rank(hsv, tau)) for tau in SUGGESTED_TAUS)
    result = BlockAnalysis(block.name, block.kind, system.state_dim, hsv, energy, suggested,
                           system, balancing)
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
    """Balanced-truncate one block of ``state.model`` (which the caller has already copied) and
    add the step to the block's :class:`BlockRecord`."""
    analysis = state.analyses.get(block.name) or analyse_block(state, block)
    # clip: a rank above the numerical minimal order has no balanced realisation; the states
    # beyond it carry σ ≈ 0, so dropping them changes nothing measurable.
    result = truncate(analysis.system, rank, clip=True, balancing=analysis.balancing)
    module = state.model.get_submodule(block.name)
    if hasattr(block.adapter, "rebuild_from_truncation"):
        new = block.adapter.rebuild_from_truncation(module, result)  # needs T / Tinv
    else:
        new = block.adapter.rebuild(module, result.system)
    state.model = replace_module(state.model, block.name, new)
    state.rewrites[block.name] = result
    bound = None
    if is_certified(block):
        # An adapter that reads its system only approximately (a black-box identification)
        # adds that error: ‖G_block − G_r‖ ≤ ‖G_block − G_read‖ + ‖G_read − G_r‖.
        read_error = getattr(block.adapter, "read_error", None)
        bound = float(result.bound.max()) + (float(read_error(module)) if read_error else 0.0)
    step = Truncation(analysis.state_dim, result.rank, bound, float(result.bound.max()))
    kept = tuple(result.hsv[..., : result.rank].flatten().tolist())
    energy = float(analysis.energy[result.rank - 1])
    previous = state.records.get(block.name)
    if previous is None:
        kind = block.kind
        try:
            kind = state.initial_block(block.name).kind
        except KeyError:
            pass
        spectrum = tuple(sorted(analysis.hsv.flatten().tolist(), reverse=True))
        state.records[block.name] = BlockRecord(block.name, kind, analysis.state_dim,
                                                result.rank, bound, kept, (step,), spectrum,
                                                energy)
    else:
        state.records[block.name] = previous.then(step, kept, energy)
    return result


@dataclass(frozen=True)
class SignalError:
    """A block's error on real inputs: ``error`` = max over the batch of ‖y − y_r‖₂ / ‖u‖₂
    (norms over time and channels), ``gain`` = max of ‖y‖₂ / ‖u‖₂, measured in ``dtype``.

    For a causal LTI block started at rest, ``error`` ≤ ‖G − G_r‖∞ ≤ 2·Σ tail. ``noise`` is the
    rounding allowance of ``dtype`` at this output scale (0 in float64).
    """

    error: float
    gain: float
    dtype: torch.dtype

    @property
    def noise(self) -> float:
        return noise_floor(self.dtype) * self.gain


def signal_error(original: nn.Module, reduced: nn.Module, u: torch.Tensor,
                 dtype: torch.dtype = torch.float64) -> SignalError:
    """Both blocks (copies at ``dtype``) run once on ``u`` (batch, L, m); raises whatever the
    user's module raises."""
    a, b = at_precision(original, dtype), at_precision(reduced, dtype)
    x = u.to(dtype)
    with torch.no_grad():
        y = primary_output(a(x))
        err = (y - primary_output(b(x))).flatten(1).norm(dim=1)
    scale = x.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
    return SignalError(float((err / scale).max()), float((y.flatten(1).norm(dim=1) / scale).max()),
                       dtype)


def l2_gain_error(original: nn.Module, reduced: nn.Module, u: torch.Tensor) -> SignalError:
    """:func:`signal_error` in float64, or in the original's own dtype when its code cannot run
    in float64 (MatchError when it runs in neither)."""
    return run_checked(lambda dtype: signal_error(original, reduced, u, dtype), original)[0]


def model_output_error(original: nn.Module, reduced: nn.Module, inputs: tuple) -> float:
    """max |y − y_r| of the two whole models' primary outputs (a tensor, ``.logits`` of a
    ``ModelOutput``, or the first tensor of a tuple/dataclass), in float64 where the model runs
    in it."""
    def measure(dtype: torch.dtype) -> float:
        a, b = at_precision(original, dtype), at_precision(reduced, dtype)
        x = cast_inputs(inputs, dtype)
        with torch.no_grad():
            return float((primary_output(a(*x)) - primary_output(b(*x))).abs().max())

    return run_checked(measure, original)[0]
