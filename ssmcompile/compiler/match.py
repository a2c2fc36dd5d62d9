"""Locate state-space blocks: a table of rules, each pattern / check / build.

(1) ``registered-layer``: a module with a registered adapter (our layers, the canonical layer,
    and third-party layers added through :func:`ssmcompile.register_block`).
(2) ``scan-call``: any other module whose forward calls our scan op; its system is read by
    probing (see :mod:`.probe`).
A candidate that fails a rule's check is recorded as a :class:`MatchFailure` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from ..adapters import adapter_for
from ..errors import MatchError
from .activations import block_inputs
from .capture import Capture, is_scan_node
from .probe import ProbedScanAdapter, probe_system
from .state import Block, MatchFailure


class MatchRule(Protocol):
    name: str

    def match(self, model: nn.Module, cap: Capture, example_inputs: tuple
              ) -> tuple[list[Block], list[MatchFailure]]: ...


def _owner(node) -> str:
    """Qualified name of the innermost module whose forward created ``node`` ('' = the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


@dataclass(frozen=True)
class RegisteredLayerRule:
    name: str = "registered-layer"

    def match(self, model, cap, example_inputs):
        blocks, failures = [], []
        if cap.traced:
            candidates = [(str(n.target), n) for n in cap.graph_module.graph.nodes
                          if n.op == "call_module"]
        else:
            candidates = [(name, None) for name, _ in model.named_modules()]
        for name, node in candidates:
            module = model.get_submodule(name)
            adapter = adapter_for(module)
            if adapter is None:
                continue
            try:
                adapter.state_dim(module)
            except Exception as err:  # noqa: BLE001 - a broken adapter is a reported failure
                failures.append(MatchFailure(name, self.name, f"adapter failed: {err}"))
                continue
            blocks.append(Block(name, adapter.kind, self.name, adapter, node))
        return blocks, failures


@dataclass(frozen=True)
class ScanCallRule:
    name: str = "scan-call"

    def match(self, model, cap, example_inputs):
        if not cap.traced:
            return [], []
        owners: dict[str, object] = {}
        for node in cap.graph_module.graph.nodes:
            if is_scan_node(node):
                owners.setdefault(_owner(node), node)
        if not owners:
            return [], []
        # Probing needs each owner's input width: read it off one run on the example inputs.
        in_features = {name: int(u.shape[-1]) for name, u in
                       block_inputs(model, list(owners), example_inputs).items() if u.ndim == 3}
        blocks, failures = [], []
        for name, node in owners.items():
            module = model.get_submodule(name)
            label = name or "<model>"
            if name not in in_features:
                failures.append(MatchFailure(label, self.name, "the module was not called on the "
                                                               "example inputs"))
                continue
            try:
                probe_system(module, in_features[name])
            except MatchError as err:
                failures.append(MatchFailure(label, self.name, str(err)))
                continue
            blocks.append(Block(name, ProbedScanAdapter.kind, self.name,
                                ProbedScanAdapter(in_features[name]), node))
        return blocks, failures


DEFAULT_RULES: tuple[MatchRule, ...] = (RegisteredLayerRule(), ScanCallRule())


def match_blocks(model: nn.Module, cap: Capture, example_inputs: tuple,
                 rules: tuple[MatchRule, ...] = DEFAULT_RULES
                 ) -> tuple[list[Block], list[MatchFailure]]:
    """Apply each rule in turn; a module claimed by an earlier rule is not matched again."""
    blocks: list[Block] = []
    failures: list[MatchFailure] = []
    for rule in rules:
        found, failed = rule.match(model, cap, example_inputs)
        claimed = {b.name for b in blocks}
        blocks += [b for b in found if b.name not in claimed and
                   not any(b.name.startswith(c + ".") for c in claimed if c)]
        failures += failed
    return blocks, failures
