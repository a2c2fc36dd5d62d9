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
    rewrite_block,
)


@dataclass(frozen=True)
class BalancedTruncation(ModulePass):
    """Emits a new model whose blocks keep r states, mapped back into each layer's own
    parameterisation. The model it is given is never mutated (``in_place = False``);
    ``modified`` is true exactly when at least one block got smaller.

    Options: those of :class:`~ssmcompile.compiler.RankPolicy` — one of ``rank``, ``fraction``,
    ``tau``, ``budget``; ``squared`` (σ² energy); ``gate`` (reduce only if r < gate·n);
    ``overrides`` (``name=r;name=r``).
    """

    name = "balanced-truncation"
    in_place = False

    policy: RankPolicy

    def run(self, state: CompileState) -> PassResult:
        # The manager re-derives the state after each rewrite, so a cached analysis is always
        # one of the current model.
        analyses = [state.analyses.get(b.name) or analyse_block(state, b) for b in state.blocks]
        decisions = self.policy.decide(analyses)
        for b in state.blocks:
            decisions[b.name] = _rounded(decisions[b.name], b.adapter)
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


def _rounded(decision, adapter):
    """The decision with its rank rounded up by the adapter's optional ``round_rank(rank, n)``
    (kernel tile multiples); a rank rounded up to n is no reduction."""
    round_rank = getattr(adapter, "round_rank", None)
    if round_rank is None or not decision.reduce:
        return decision
    r = round_rank(decision.rank, decision.state_dim)
    if r == decision.rank:
        return decision
    return replace(decision, rank=r, reduce=r < decision.state_dim,
                   reason=f"{decision.reason}; rounded up to {r}")
