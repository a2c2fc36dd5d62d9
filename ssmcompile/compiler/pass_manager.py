"""Passes, their registry, pipeline strings and the pass manager.

A pass is a frozen dataclass with a kebab-case ``name`` and typed options (the xDSL idea). The
registry maps ``name`` → class; concrete passes live in the top-level ``passes`` package, which
registers itself through the ``ssmcompile.passes`` entry point, so this core never imports it.

Pipeline strings: ``"hankel-analysis,balanced-truncation{tau=0.01},verify"``. Options go inside
braces, separated by spaces or commas:
``balanced-truncation{rank=12 overrides=blocks.0.ssm=8;blocks.1.ssm=4}``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import types
import typing
from dataclasses import dataclass
from typing import ClassVar

from ..errors import PassError
from .state import CompileState


@dataclass(frozen=True)
class PassResult:
    """What a pass hands on: the state and whether the *model* changed (the torch.fx idea)."""

    state: CompileState
    modified: bool


@dataclass(frozen=True)
class ModulePass:
    """Base class of every pass. Subclasses set ``name`` and ``in_place`` and implement ``run``.

    ``in_place`` says whether the pass may mutate ``state.model`` (the onnx-ir convention); our
    rewrites are never in place: they build a new model and leave the caller's untouched.
    """

    name: ClassVar[str] = ""
    in_place: ClassVar[bool] = False

    def run(self, state: CompileState) -> PassResult:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, state: CompileState) -> PassResult:
        return self.run(state)

    def spec(self) -> str:
        """This pass as a pipeline item, options that differ from the defaults included."""
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            opts.append(f"{f.name}={_format_value(value)}")
        return self.name + ("{" + " ".join(opts) + "}" if opts else "")


_REGISTRY: dict[str, type[ModulePass]] = {}
_ENTRY_POINTS_LOADED = False


def register_pass(cls: type[ModulePass]) -> type[ModulePass]:
    """Class decorator: make ``cls`` available to pipeline strings under ``cls.name``."""
    if not cls.name or cls.name != cls.name.lower() or " " in cls.name or "_" in cls.name:
        raise PassError(f"pass name {cls.name!r} must be kebab-case")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise PassError(f"a different pass is already registered as {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group="ssmcompile.passes"):
        ep.load()


def registered_passes() -> dict[str, type[ModulePass]]:
    """All known passes by name (loading the ``ssmcompile.passes`` entry points once)."""
    _load_entry_points()
    return dict(_REGISTRY)


def _format_value(value: object) -> str:
    if isinstance(value, tuple):
        return ";".join(f"{k}={v}" for k, v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _convert(pass_name: str, key: str, raw: str, annotation: object) -> object:
    """Convert the text of one option to the field's declared type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if raw.lower() == "none":
            return None
        return _convert(pass_name, key, raw, non_none[0])
    try:
        if annotation is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if annotation is int:
            return int(raw)
        if annotation is float:
            return float(raw)
        if annotation is str:
            return raw
        if origin is tuple:  # tuple[tuple[str, int], ...]: "a=1;b=2"
            pairs = []
            for item in filter(None, raw.split(";")):
                name, _, value = item.rpartition("=")
                if not name:
                    raise ValueError(item)
                pairs.append((name, int(value)))
            return tuple(pairs)
    except ValueError:
        raise PassError(
            f"option {key}={raw!r} of pass {pass_name!r} is not a valid {annotation}") from None
    raise PassError(f"option {key} of pass {pass_name!r} has an unsupported type {annotation}")


def _split_items(text: str) -> list[str]:
    items, depth, current = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PassError(f"unbalanced '}}' in pipeline {text!r}")
        if ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise PassError(f"unbalanced '{{' in pipeline {text!r}")
    items.append("".join(current).strip())
    return [i for i in items if i]


def parse_pipeline(text: str) -> list[ModulePass]:
    """Parse a pipeline string into pass instances; unknown names and options are errors."""
    registry = registered_passes()
    passes: list[ModulePass] = []
    for item in _split_items(text):
        name, brace, rest = item.partition("{")
        name = name.strip()
        cls = registry.get(name)
        if cls is None:
            known = ", ".join(sorted(registry)) or "none"
            raise PassError(f"unknown pass {name!r} (known: {known})")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, object] = {}
        body = rest[:-1] if brace else ""
        for token in body.replace(",", " ").split():
            key, eq, raw = token.partition("=")
            if not eq or key not in fields:
                raise PassError(
                    f"pass {name!r} has no option {key!r} (options: {', '.join(fields)})")
            kwargs[key] = _convert(name, key, raw, hints[key])
        try:
            passes.append(cls(**kwargs))
        except (TypeError, ValueError) as err:
            raise PassError(f"pass {name!r}: {err}") from None
    return passes


class PassManager:
    """Runs passes in order on a :class:`CompileState`; ``modified`` is true if any pass changed
    the model."""

    def __init__(self, passes: typing.Sequence[ModulePass] | str):
        self.passes = parse_pipeline(passes) if isinstance(passes, str) else list(passes)

    @property
    def pipeline(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def run(self, state: CompileState) -> PassResult:
        modified = False
        for p in self.passes:
            result = p.run(state)
            state = result.state
            state.history.append((p.spec(), result.modified))
            modified = modified or result.modified
        return PassResult(state, modified)
