"""The public one-call API: ``analyze``, ``reduce`` and ``run_pipeline``.

The passes are the ``passes`` package's (imported here explicitly: the compiler core knows
none of them); a pipeline string is parsed against ``passes.default_registry()`` unless
another registry is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

import passes as _passes

from .compiler import (
    CompileState,
    ModulePass,
    PassManager,
    PassRegistry,
    RankPolicy,
    Report,
    block_dependencies,
    build_report,
    prepare,
)
from .compiler.suspects import no_block_message
from .errors import MatchError


def run_pipeline(model: nn.Module, example_inputs, pipeline: str | Sequence[ModulePass],
                 registry: PassRegistry | None = None
                 ) -> tuple[nn.Module, Report, CompileState]:
    """Run a pipeline (string or pass objects); returns (model, report, final state).

    ``model`` is never modified; the returned model is it when no pass changed anything.
    """
    if isinstance(pipeline, str):
        manager = PassManager(pipeline, registry or _passes.default_registry())
    else:
        manager = PassManager(pipeline)
    state = manager.run(prepare(model, example_inputs)).state
    nodes = {b.name: b.node.name for b in state.blocks if b.node is not None}
    deps = block_dependencies(state.capture, nodes)
    feeds = {name: tuple(sorted(deps.successors(name))) for name in deps.nodes}
    return state.model, build_report(state, feeds), state


def analyze(model: nn.Module, example_inputs) -> Report:
    """Hankel analysis of every state-space block in ``model`` (not modified).

    ``example_inputs``: one tensor or a tuple of the model's forward arguments. A model with no
    block gives a report that says so and names the modules that look like SSMs.
    """
    _, report, _ = run_pipeline(model, example_inputs, _passes.default_pipeline(None))
    return report


def reduce(model: nn.Module, example_inputs, policy: RankPolicy | None = None, *,
           verify: bool = True, hinf: bool = False, **rule) -> tuple[nn.Module, Report]:
    """Balanced truncation of every block by one rank policy; ``model`` is left untouched.

    The policy is a :class:`RankPolicy` or its fields as keywords (``rank=12``, ``tau=0.01``,
    ``budget=0.5``, ``fraction=0.25``, ``overrides={"blocks.0.ssm": 8}``, ``gate``,
    ``squared``). Returns ``(reduced_model, report)``; when verifying, the report holds each
    block's measured error next to its bound, and a block that breaks its bound raises
    ``VerificationError``. A model with no state-space block raises ``MatchError``.
    """
    if policy is None:
        policy = RankPolicy(**rule)
    elif rule:
        raise TypeError("give a RankPolicy or its fields as keywords, not both")
    # A one-off call can afford the whole-model output comparison that training events skip.
    pipeline = _passes.default_pipeline(policy, verify=verify, hinf=hinf, output=True)
    reduced, report, state = run_pipeline(model, example_inputs, pipeline)
    if not state.initial_blocks:
        raise MatchError(no_block_message(model, state))
    return reduced, report


__all__ = ["analyze", "reduce", "prepare", "run_pipeline"]
