"""Passes and the pass manager.

A pass is a frozen dataclass with a kebab-case ``name`` and typed options (the xDSL idea); its
``run`` takes a :class:`CompileState` and returns a :class:`PassResult` (the torch.fx idea).
The manager keeps the state honest between passes:

- after a pass that reports ``modified``, it re-captures and re-matches the new model and drops
  every analysis (``state.analyses`` and the graph's ``node.meta``): the next pass always sees a
  graph that describes the current model, and no pass invalidates anything by hand;
- it records what each pass cost (``state.timings``: wall and CPU time, re-derive apart);
- a pass declared functional (``in_place = False``) that mutates the model it was given, or any
  pass that touches the caller's model, is a :class:`PassError` (the onnx-ir rule).
"""

from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..errors import PassError
from .state import CompileState, PassTiming


@dataclass(frozen=True)
class PassResult:
    """What a pass hands on: the state and whether the *model* changed."""

    state: CompileState
    modified: bool


@dataclass(frozen=True)
class ModulePass:
    """Base class of every pass. Subclasses set ``name`` and ``in_place`` and implement ``run``.

    ``in_place`` says whether the pass may mutate ``state.model``; a functional pass builds a new
    model instead. No pass may mutate ``state.original`` (the caller's model).
    """

    name: ClassVar[str] = ""
    in_place: ClassVar[bool] = False

    def run(self, state: CompileState) -> PassResult:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, state: CompileState) -> PassResult:
        return self.run(state)

    def spec(self) -> str:
        """This pass as a pipeline item, options that differ from the defaults included
        (the fields of a nested options dataclass are written as the pass's own)."""
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                opts += [f"{g.name}={_format_value(getattr(value, g.name))}"
                         for g in dataclasses.fields(value) if _differs(g, value)]
            elif _differs(f, self):
                opts.append(f"{f.name}={_format_value(value)}")
        return self.name + ("{" + " ".join(opts) + "}" if opts else "")


def _differs(f: dataclasses.Field, obj: object) -> bool:
    value = getattr(obj, f.name)
    if f.default is not dataclasses.MISSING:
        return value != f.default
    if f.default_factory is not dataclasses.MISSING:
        return value != f.default_factory()
    return True


def _format_value(value: object) -> str:
    if isinstance(value, tuple):
        return ";".join(f"{k}={v}" for k, v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def fingerprint(model: nn.Module) -> tuple:
    """Identity and in-place version of every module, parameter and buffer: equal before and
    after a call exactly when the call neither replaced nor wrote into any of them."""
    mods = tuple((name, id(m)) for name, m in model.named_modules(remove_duplicate=False))
    tensors = tuple((name, id(t), t._version) for name, t in
                    [*model.named_parameters(remove_duplicate=False),
                     *model.named_buffers(remove_duplicate=False)])
    return mods, tensors


class PassManager:
    """Runs passes in order; ``modified`` is true if any pass changed the model.

    ``passes``: pass objects, or a pipeline string with the ``registry`` to parse it against.
    """

    def __init__(self, passes: typing.Sequence[ModulePass] | str, registry=None):
        if isinstance(passes, str):
            from .registry import parse_pipeline

            passes = parse_pipeline(passes, registry)
        self.passes = list(passes)
        for p in self.passes:
            if not isinstance(p, ModulePass):
                raise PassError(f"{p!r} is not a pass (a ModulePass instance)")

    @property
    def pipeline(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def run(self, state: CompileState) -> PassResult:
        from .derive import rederive

        original = fingerprint(state.original)
        modified = False
        for p in self.passes:
            given = state.model
            before = fingerprint(given)
            wall, cpu = time.perf_counter(), time.process_time()
            result = p.run(state)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if not isinstance(result, PassResult):
                raise PassError(f"pass {p.name!r} returned {type(result).__name__}, "
                                "not a PassResult")
            state = result.state
            if not p.in_place and fingerprint(given) != before:
                raise PassError(f"pass {p.name!r} is declared functional but mutated the model "
                                "it was given")
            if fingerprint(state.original) != original:
                raise PassError(f"pass {p.name!r} mutated the caller's model")
            state.history.append((p.spec(), result.modified))
            rederived = 0.0
            if result.modified:
                rederived = time.perf_counter()
                state = rederive(state)
                rederived = time.perf_counter() - rederived
            state.timings.append(PassTiming(p.spec(), wall, cpu, rederived))
            modified = modified or result.modified
        return PassResult(state, modified)


__all__ = ["ModulePass", "PassResult", "PassManager", "fingerprint"]
