"""Locate state-space blocks: a table of rules, each pattern / check / rewrite.

- ``pattern(ctx)``: the candidates a rule looks at (cheap: types, graph nodes, one observed run);
- ``check(ctx, candidate)``: returns the block's adapter, or raises MatchError saying why not;
- rewrite: the adapter's ``rebuild`` (a new module realising a reduced system).

Rules, in order: (1) ``registered-layer``: modules with a registered adapter (our layers, the
canonical layer, ``ssmcompile.register_block`` layers); (2) ``scan-call``: any other module
whose forward calls our scan ops, read by probing (:mod:`.probe`); (3) ``lti-probe``: any other
module whose map is linear, causal and time-invariant with memory, identified from its impulse
response (:mod:`.lti_probe`). A candidate inside, or around, a block already claimed is not
looked at again. Any exception inside a user's module while checking becomes a
:class:`MatchFailure` with the reason, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import fx, nn

from ..adapters import adapter_for
from ..adapters.base import BlockAdapter
from ..errors import MatchError
from .activations import Observation, observe
from .capture import Capture, is_scan_node
from .lti_probe import LTIProbeAdapter
from .precision import describe_exception, run_checked
from .probe import ProbedScanAdapter, probe_system
from .state import Block, MatchFailure

# The Hankel an identification builds has (horizon/2)·width rows: this keeps its SVD small.
_MAX_HANKEL_ROWS = 1024
_MIN_HORIZON = 65


class NotACandidate(MatchError):
    """A check found the module outside the rule's scope (e.g. memoryless): not reported."""


@dataclass(frozen=True)
class Candidate:
    """A module a rule's pattern selected; ``node`` is its fx node when the model traced."""

    name: str
    node: fx.Node | None = None


@dataclass
class MatchContext:
    """What rules see: the model, its capture, the example inputs and one observed run."""

    model: nn.Module
    capture: Capture
    example_inputs: tuple
    _observation: Observation | None = field(default=None, repr=False)

    @property
    def observation(self) -> Observation:
        if self._observation is None:
            self._observation = observe(self.model, self.example_inputs)
        return self._observation

    def in_features(self, name: str) -> int:
        call = self.observation.calls.get(name)
        if call is None or len(call.in_shape) != 3:
            raise MatchError("the module was not called with a (batch, length, features) "
                             "tensor on the example inputs")
        return int(call.in_shape[-1])


class MatchRule(Protocol):
    name: str

    def pattern(self, ctx: MatchContext) -> list[Candidate]: ...

    def check(self, ctx: MatchContext, candidate: Candidate) -> BlockAdapter: ...


def _owner(node: fx.Node) -> str:
    """Qualified name of the innermost module whose forward created ``node`` ('' = the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _last_node_of(cap: Capture, name: str) -> fx.Node | None:
    """The last graph node created inside module ``name`` (its output, for data-flow order)."""
    if not cap.traced:
        return None
    last = None
    for node in cap.graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if any(path == name for path, _ in stack.values()):
            last = node
    return last


@dataclass(frozen=True)
class RegisteredLayerRule:
    name: str = "registered-layer"

    def pattern(self, ctx):
        if ctx.capture.traced:
            return [Candidate(str(n.target), n) for n in ctx.capture.graph_module.graph.nodes
                    if n.op == "call_module" and adapter_for(ctx.model.get_submodule(
                        str(n.target))) is not None]
        return [Candidate(name) for name, m in ctx.model.named_modules()
                if adapter_for(m) is not None]

    def check(self, ctx, candidate):
        module = ctx.model.get_submodule(candidate.name)
        adapter = adapter_for(module)
        adapter.state_dim(module)  # a broken adapter is a reported failure
        return adapter


@dataclass(frozen=True)
class ScanCallRule:
    name: str = "scan-call"

    def pattern(self, ctx):
        nodes: dict[str, fx.Node] = {}
        if ctx.capture.traced:
            for node in ctx.capture.graph_module.graph.nodes:
                if is_scan_node(node):
                    nodes.setdefault(_owner(node), node)
        # The observed run finds owners in models that fx cannot trace as well.
        owners = list(nodes) + [n for n in ctx.observation.scan_owners if n not in nodes]
        return [Candidate(name, nodes.get(name)) for name in owners]

    def check(self, ctx, candidate):
        H = ctx.in_features(candidate.name)
        probe_system(ctx.model.get_submodule(candidate.name), H)
        return ProbedScanAdapter(H)


@dataclass(frozen=True)
class LTIProbeRule:
    """Black-box LTI blocks (an FFT convolution, a Python-loop recurrence). Candidates are the
    user-written modules (not torch's own layers) that map a (batch, L, m) tensor to a
    (batch, L, p) one, innermost first, so the layer is found rather than a linear wrapper."""

    name: str = "lti-probe"

    def pattern(self, ctx):
        obs = ctx.observation
        owners = set(obs.scan_owners)
        found = []
        for name, call in obs.calls.items():
            module = ctx.model.get_submodule(name)
            # modules that call a scan, or contain one that does, are the scan-call rule's
            if type(module).__module__.startswith("torch.") or _related(name, owners):
                continue
            if not (call.in_dtype.is_floating_point and len(call.in_shape) == 3):
                continue
            out = call.out_shape
            if out is None or len(out) != 3 or out[:2] != call.in_shape[:2]:
                continue
            found.append(Candidate(name, _last_node_of(ctx.capture, name)))
        return sorted(found, key=lambda c: -c.name.count(".") - (c.name != ""))

    def check(self, ctx, candidate):
        call = ctx.observation.calls[candidate.name]
        m, p = call.in_shape[-1], call.out_shape[-1]
        horizon = min(max(call.in_shape[1], _MIN_HORIZON),
                      2 * max(1, _MAX_HANKEL_ROWS // max(m, p)) + 1)
        module = ctx.model.get_submodule(candidate.name)

        def identify(dtype: torch.dtype) -> LTIProbeAdapter:
            adapter = LTIProbeAdapter(m, horizon, dtype)
            adapter.identify(module)
            return adapter

        try:
            return run_checked(identify, module)[0]
        except MatchError as err:
            # Pointwise maps (norms, gates, MLPs) are not sequence blocks at all: listing each
            # as a rejected candidate would bury the rejections that matter.
            if str(err).startswith("has no memory"):
                raise NotACandidate(str(err)) from None
            raise


DEFAULT_RULES: tuple[MatchRule, ...] = (RegisteredLayerRule(), ScanCallRule(), LTIProbeRule())


def _related(name: str, claimed: set[str]) -> bool:
    """True when ``name`` is, is inside, or contains a claimed block ('' is the root)."""
    for c in claimed:
        if name == c or c == "" or name == "":
            return True
        if name.startswith(c + ".") or c.startswith(name + "."):
            return True
    return False


def match_blocks(model: nn.Module, cap: Capture, example_inputs: tuple,
                 rules: tuple[MatchRule, ...] = DEFAULT_RULES
                 ) -> tuple[list[Block], list[MatchFailure]]:
    """Apply each rule's pattern and check in turn; returns the blocks and the rejections."""
    ctx = MatchContext(model, cap, example_inputs)
    blocks: list[Block] = []
    failures: list[MatchFailure] = []
    claimed: set[str] = set()
    for rule in rules:
        try:
            candidates = rule.pattern(ctx)
        except Exception as err:  # noqa: BLE001 - a rule that cannot look is a reported failure
            failures.append(MatchFailure("<model>", rule.name, describe_exception(err)))
            continue
        for cand in candidates:
            if _related(cand.name, claimed):
                continue
            try:
                adapter = rule.check(ctx, cand)
            except NotACandidate:
                continue
            except MatchError as err:
                failures.append(MatchFailure(cand.name or "<model>", rule.name, str(err)))
                continue
            except Exception as err:  # noqa: BLE001 - user code raising is a failed match
                failures.append(MatchFailure(cand.name or "<model>", rule.name,
                                             f"raised {describe_exception(err)}"))
                continue
            blocks.append(Block(cand.name, adapter.kind, rule.name, adapter, cand.node))
            claimed.add(cand.name)
    if ctx._observation is not None:
        # Read only when some rule ran the model anyway (the default rules always do).
        for b in blocks:
            call = ctx._observation.calls.get(b.name)
            b.in_shape = call.in_shape if call is not None else None
        if ctx._observation.error:
            failures.append(MatchFailure("<model>", "observe", ctx._observation.error))
    return blocks, failures


__all__ = ["Candidate", "NotACandidate", "MatchContext", "MatchRule", "RegisteredLayerRule",
           "ScanCallRule", "LTIProbeRule", "DEFAULT_RULES", "match_blocks"]
