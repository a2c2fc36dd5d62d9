"""The typed state that flows through a pipeline: capture → match → analyse → rewrite → verify.

Each stage adds its own typed results; nothing is a nested dict of loose values. Analyses are
also attached to the fx node of their block (``node.meta["ssmcompile"]``) when a graph exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..numerics.system import LTISystem, TruncationResult

if TYPE_CHECKING:  # pragma: no cover
    from ..adapters.base import BlockAdapter
    from .capture import Capture

META_KEY = "ssmcompile"


@dataclass
class Block:
    """A located state-space block.

    ``name`` is the module's qualified name in the model; ``rule`` the match rule that found it;
    ``node`` its fx node (``call_module`` for a leaf layer, the scan ``call_function`` for a user
    module traced through), or ``None`` when matched at module level after a capture failure.
    """

    name: str
    kind: str
    rule: str
    adapter: BlockAdapter
    node: torch.fx.Node | None = None


@dataclass(frozen=True)
class MatchFailure:
    """A module that looked like a candidate but did not match, and why."""

    name: str
    rule: str
    reason: str


@dataclass(frozen=True)
class BlockAnalysis:
    """Hankel analysis of one block.

    ``hsv``: (..., n) descending float64 (a batch for multi-SISO blocks such as S4D);
    ``energy``: (n,) fraction of Σσ kept by the leading r = 1..n states (worst case over a batch);
    ``suggested``: (τ, rank) pairs from the paper's energy rule.
    """

    name: str
    kind: str
    state_dim: int
    hsv: torch.Tensor
    energy: torch.Tensor
    suggested: tuple[tuple[float, int], ...]
    system: LTISystem


@dataclass(frozen=True)
class RankDecision:
    """What the rank policy chose for one block, and why."""

    name: str
    state_dim: int
    rank: int
    reduce: bool
    reason: str


@dataclass(frozen=True)
class BlockVerification:
    """Measured error of a rewritten block next to its certified bound.

    ``measured``: max over the probe batch of ‖y − y_r‖₂ / ‖u‖₂ on the block's real input
    (an ℓ2 gain, which the H∞ norm of G − G_r bounds); ``hinf``: the H∞ estimate, if computed;
    ``bound`` is ``None`` for data-driven (selective) blocks, which have no certificate.
    """

    name: str
    bound: float | None
    measured: float
    hinf: float | None
    ok: bool


@dataclass
class CompileState:
    """Everything a pipeline knows about one model. ``original`` is never mutated."""

    original: nn.Module
    model: nn.Module
    example_inputs: tuple
    capture: Capture
    blocks: list[Block]
    failures: list[MatchFailure] = field(default_factory=list)
    analyses: dict[str, BlockAnalysis] = field(default_factory=dict)
    decisions: dict[str, RankDecision] = field(default_factory=dict)
    rewrites: dict[str, TruncationResult] = field(default_factory=dict)
    # Bounds add up when one pipeline truncates a block twice (triangle inequality), so verify
    # checks the original against the final model with the sum.
    bounds: dict[str, float] = field(default_factory=dict)
    verifications: dict[str, BlockVerification] = field(default_factory=dict)
    output_error: float | None = None
    history: list[tuple[str, bool]] = field(default_factory=list)

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)
