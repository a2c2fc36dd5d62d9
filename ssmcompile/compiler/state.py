"""The typed state that flows through a pipeline: capture → match → analyse → rewrite → verify.

Each stage adds its own typed results; nothing is a nested dict of loose values. Analyses are
also attached to the fx node of their block (``node.meta["ssmcompile"]``) when a graph exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..numerics.hankel import BalancingSVD
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
    ``in_shape``: the shape of its first input in the observed run of the example inputs
    (batch, length, features), the batch cut as that run cut it; ``None`` when not observed.
    """

    name: str
    kind: str
    rule: str
    adapter: BlockAdapter
    node: torch.fx.Node | None = None
    in_shape: tuple[int, ...] | None = None


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
    ``suggested``: (τ, rank) pairs from the paper's energy rule; ``balancing``: the square-root
    balancing SVD of ``system`` the HSVs came from (a truncation of this system reuses it).
    """

    name: str
    kind: str
    state_dim: int
    hsv: torch.Tensor
    energy: torch.Tensor
    suggested: tuple[tuple[float, int], ...]
    system: LTISystem
    balancing: BalancingSVD | None = None


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
    ``bound`` is ``None`` for data-driven (selective) blocks, which have no certificate;
    ``precision``: the dtype the comparison ran in (float64 unless the block cannot run in it).
    """

    name: str
    bound: float | None
    measured: float
    hinf: float | None
    ok: bool
    precision: str = "float64"


@dataclass(frozen=True)
class Truncation:
    """One rewrite of a block inside a pipeline: ``n`` → ``r`` states with this ``bound``
    (``None`` for a data-driven block, whose error is measured only); ``tail``: 2·Σ of the
    discarded σ of the system truncated (for a data-driven block, of its surrogate)."""

    n: int
    r: int
    bound: float | None
    tail: float


@dataclass(frozen=True)
class BlockRecord:
    """The one record of what a pipeline did to one block; the CLI, the trainer, the report and
    the checkpoint history all read this.

    ``n_before``: the state dim in the caller's model; ``rank``: the final one; ``bound``: the
    summed certified bound of every truncation (errors add by the triangle inequality), or
    ``None`` when the block is data-driven ("measured only"); ``hsv_kept``: the HSVs the last
    truncation kept (flattened over a batch for multi-SISO blocks); ``steps``: each truncation;
    ``hsv_before``: the whole spectrum before the first truncation (descending, flattened);
    ``energy_kept``: Σ kept σ / Σ σ of the last truncation (worst case over a batch).
    """

    name: str
    kind: str
    n_before: int
    rank: int
    bound: float | None
    hsv_kept: tuple[float, ...]
    steps: tuple[Truncation, ...]
    hsv_before: tuple[float, ...] = ()
    energy_kept: float | None = None

    @property
    def certified(self) -> bool:
        return self.bound is not None

    @property
    def tail(self) -> float:
        """Σ over the truncations of 2·Σ discarded σ (the bound when certified)."""
        return sum(s.tail for s in self.steps)

    def then(self, step: Truncation, hsv_kept: tuple[float, ...],
             energy_kept: float | None) -> BlockRecord:
        """This record after one more truncation of the same block."""
        bound = None if self.bound is None or step.bound is None else self.bound + step.bound
        return replace(self, rank=step.r, bound=bound, hsv_kept=hsv_kept,
                       steps=(*self.steps, step), energy_kept=energy_kept)


@dataclass(frozen=True)
class PassTiming:
    """What one pass of a pipeline cost: ``wall_s`` and ``cpu_s`` (process CPU time, every
    thread) of its ``run``; ``rederive_s``: wall time of the re-capture and re-match after it
    (0 when it left the model unchanged)."""

    spec: str
    wall_s: float
    cpu_s: float
    rederive_s: float = 0.0


@dataclass
class CompileState:
    """Everything a pipeline knows about one model. ``original`` is never mutated.

    ``capture`` and ``blocks`` always describe ``model`` (the pass manager re-derives them after
    every modifying pass); ``initial_blocks`` are the blocks as matched on ``original``;
    ``records`` accumulate over the whole pipeline, ``analyses`` only until the next rewrite;
    ``timings``: one :class:`PassTiming` per pass run.
    """

    original: nn.Module
    model: nn.Module
    example_inputs: tuple
    capture: Capture
    blocks: list[Block]
    failures: list[MatchFailure] = field(default_factory=list)
    rules: tuple = ()
    initial_blocks: tuple[Block, ...] = ()
    analyses: dict[str, BlockAnalysis] = field(default_factory=dict)
    decisions: dict[str, RankDecision] = field(default_factory=dict)
    rewrites: dict[str, TruncationResult] = field(default_factory=dict)
    records: dict[str, BlockRecord] = field(default_factory=dict)
    verifications: dict[str, BlockVerification] = field(default_factory=dict)
    output_error: float | None = None
    history: list[tuple[str, bool]] = field(default_factory=list)
    timings: list[PassTiming] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def initial_block(self, name: str) -> Block:
        for b in self.initial_blocks:
            if b.name == name:
                return b
        raise KeyError(name)
