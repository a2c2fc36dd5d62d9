"""Derive the graph-level view of a model: capture → match → order.

:func:`prepare` builds the state a pipeline starts from; :func:`rederive` rebuilds the view of
the *current* model after a rewrite (new graph, new blocks, no analyses), keeping what the
pipeline has recorded so far. The caller's model is only ever read: capture traces a copy.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .capture import block_dependencies, block_order, capture
from .match import DEFAULT_RULES, match_blocks
from .state import CompileState, MatchFailure


def _derive(model: nn.Module, inputs: tuple, rules: tuple):
    cap = capture(model)
    blocks, failures = match_blocks(model, cap, inputs, rules)
    nodes = {b.name: b.node.name for b in blocks if b.node is not None}
    order = block_order(block_dependencies(cap, nodes), [b.name for b in blocks])
    blocks.sort(key=lambda b: order.index(b.name))
    return cap, blocks, failures


def prepare(model: nn.Module, example_inputs, rules: tuple | None = None) -> CompileState:
    """Capture and match ``model`` (not modified). ``example_inputs``: one tensor or a tuple of
    the model's forward arguments."""
    inputs = (tuple(example_inputs) if isinstance(example_inputs, (tuple, list))
              else (example_inputs,))
    rules = DEFAULT_RULES if rules is None else tuple(rules)
    cap, blocks, failures = _derive(model, inputs, rules)
    return CompileState(original=model, model=model, example_inputs=inputs, capture=cap,
                        blocks=blocks, failures=failures, rules=rules,
                        initial_blocks=tuple(blocks))


def rederive(state: CompileState) -> CompileState:
    """The state re-captured and re-matched on ``state.model``; analyses are dropped (they
    describe the model before the rewrite), records, decisions and verifications kept.

    A block the pipeline rewrote must still be found under its name: losing it would make every
    later pass silently skip it, so that is a MatchFailure kept in the state.
    """
    cap, blocks, failures = _derive(state.model, state.example_inputs, state.rules)
    found = {b.name for b in blocks}
    lost = [MatchFailure(name, "rederive", "a rewritten block is no longer found in the new "
                         "model") for name in state.records if name not in found]
    return replace(state, capture=cap, blocks=blocks, failures=failures + lost, analyses={})



__all__ = ["prepare", "rederive"]
