"""``balanced-truncation``: reduce each block's state by the shared rank policy."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from ssmcompile.compiler import (
    CompileState,
    ModulePass,
    PassResult,
    RankPolicy,
    analyse_block,
    register_pass,
    rewrite_block,
)


@register_pass
@dataclass(frozen=True)
class BalancedTruncation(ModulePass):
    """Emits a new model whose blocks keep r states, mapped back into each layer's own
    parameterisation. The model the caller holds is never mutated (``in_place = False``);
    ``modified`` is true exactly when at least one block got smaller.

    Options: one of ``rank``, ``fraction``, ``tau``, ``budget``; ``squared`` (σ² energy);
    ``gate`` (reduce only if r < gate·n); ``overrides`` (``name=r;name=r``).
    """

    name = "balanced-truncation"
    in_place = False

    rank: int | None = None
    fraction: float | None = None
    tau: float | None = None
    budget: float | None = None
    squared: bool = False
    gate: float = 0.95
    overrides: tuple[tuple[str, int], ...] = ()

    def policy(self) -> RankPolicy:
        return RankPolicy(rank=self.rank, fraction=self.fraction, tau=self.tau,
                          budget=self.budget, squared=self.squared, gate=self.gate,
                          overrides=dict(self.overrides))

    def run(self, state: CompileState) -> PassResult:
        policy = self.policy()
        # A block already rewritten by an earlier pass is analysed again: its cached analysis
        # describes the system before that rewrite.
        analyses = [analyse_block(state, b) if b.name in state.rewrites or b.name not in
                    state.analyses else state.analyses[b.name] for b in state.blocks]
        decisions = policy.decide(analyses)
        state.decisions.update(decisions)
        todo = [b for b in state.blocks if decisions[b.name].reduce]
        if not todo:
            return PassResult(state, modified=False)
        state.model = copy.deepcopy(state.model)
        for block in todo:
            result = rewrite_block(state, block, decisions[block.name].rank)
            if result.rank != decisions[block.name].rank:
                d = decisions[block.name]
                state.decisions[block.name] = replace(
                    d, rank=result.rank, reason=f"{d.reason}; clipped to the numerical order")
        return PassResult(state, modified=True)
