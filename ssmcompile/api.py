"""The public one-call API: ``analyze`` and ``reduce``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from .compiler import (
    CompileState,
    ModulePass,
    PassManager,
    Report,
    block_dependencies,
    block_order,
    build_report,
    capture,
    match_blocks,
    registered_passes,
)


def _as_tuple(example_inputs) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def prepare(model: nn.Module, example_inputs) -> CompileState:
    """Capture and match: the state every pipeline starts from. ``model`` is not modified."""
    inputs = _as_tuple(example_inputs)
    cap = capture(model)
    blocks, failures = match_blocks(model, cap, inputs)
    nodes = {b.name: b.node.name for b in blocks if b.node is not None}
    order = block_order(block_dependencies(cap, nodes), [b.name for b in blocks])
    blocks.sort(key=lambda b: order.index(b.name))
    return CompileState(original=model, model=model, example_inputs=inputs, capture=cap,
                        blocks=blocks, failures=failures)


def run_pipeline(model: nn.Module, example_inputs, pipeline: str | Sequence[ModulePass]
                 ) -> tuple[nn.Module, Report, CompileState]:
    """Run a pipeline (string or pass objects); returns (model, report, final state)."""
    state = prepare(model, example_inputs)
    result = PassManager(pipeline).run(state)
    state = result.state
    nodes = {b.name: b.node.name for b in state.blocks if b.node is not None}
    deps = block_dependencies(state.capture, nodes)
    feeds = {name: tuple(sorted(deps.successors(name))) for name in deps.nodes}
    return state.model, build_report(state, feeds), state


def analyze(model: nn.Module, example_inputs) -> Report:
    """Hankel analysis of every state-space block in ``model`` (not modified).

    ``example_inputs``: one tensor or a tuple of the model's forward arguments.
    """
    _, report, _ = run_pipeline(model, example_inputs, "hankel-analysis")
    return report


def reduce(model: nn.Module, example_inputs, *, rank: int | None = None,
           tau: float | None = None, budget: float | None = None,
           fraction: float | None = None, overrides: Mapping[str, int] | None = None,
           verify: bool = True) -> tuple[nn.Module, Report]:
    """Balanced truncation of every block by one rank policy; ``model`` is left untouched.

    Returns ``(reduced_model, report)``; with ``verify`` the report holds each block's measured
    error next to its bound, and a block that breaks its bound raises ``VerificationError``.
    """
    passes = registered_passes()
    pipeline: list[ModulePass] = [
        passes["hankel-analysis"](),
        passes["balanced-truncation"](rank=rank, tau=tau, budget=budget, fraction=fraction,
                                      overrides=tuple((overrides or {}).items())),
    ]
    if verify:
        pipeline.append(passes["verify"]())
    reduced, report, _ = run_pipeline(model, example_inputs, pipeline)
    return reduced, report


__all__ = ["analyze", "reduce", "prepare", "run_pipeline"]

