"""Pass registries as values, and the pipeline-string parser that takes one.

The core knows no concrete pass: a :class:`PassRegistry` is built by whoever owns the passes
(``passes.default_registry()`` for ours) and handed to :func:`parse_pipeline`. Third-party
passes join either through the ``ssmcompile.passes`` entry point group or the
:func:`register_pass` decorator; ``passes.default_registry()`` includes both.

Pipeline strings: ``"first-pass,second-pass{rank=12},third-pass"``. Options go inside braces,
separated by spaces or commas; ``name=r;name=r`` for per-block pairs. A pass option whose type
is itself a dataclass (e.g. a rank policy) is flattened: its fields are the pass's options.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import PassError
from .pass_manager import ModulePass

ENTRY_POINT_GROUP = "ssmcompile.passes"


def check_pass_class(cls: type) -> type[ModulePass]:
    """``cls`` if it is a ModulePass subclass with a kebab-case name, else PassError."""
    if not (isinstance(cls, type) and issubclass(cls, ModulePass)):
        raise PassError(f"{cls!r} is not a ModulePass subclass")
    name = cls.name
    if not name or name != name.lower() or " " in name or "_" in name:
        raise PassError(f"pass name {name!r} must be kebab-case")
    return cls


@dataclass(frozen=True)
class PassRegistry:
    """Pass name → pass class; immutable: :meth:`with_passes` returns a new registry."""

    classes: Mapping[str, type[ModulePass]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, *classes: type[ModulePass]) -> PassRegistry:
        return cls().with_passes(*classes)

    def with_passes(self, *classes: type[ModulePass]) -> PassRegistry:
        out = dict(self.classes)
        for c in classes:
            check_pass_class(c)
            existing = out.get(c.name)
            if existing is not None and existing is not c:
                raise PassError(f"two different passes are named {c.name!r}")
            out[c.name] = c
        return PassRegistry(types.MappingProxyType(out))

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __getitem__(self, name: str) -> type[ModulePass]:
        cls = self.classes.get(name)
        if cls is None:
            known = ", ".join(sorted(self.classes)) or "none"
            raise PassError(f"unknown pass {name!r} (known: {known})")
        return cls

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.classes))


_EXTENSIONS: list[type[ModulePass]] = []


def register_pass(cls: type[ModulePass]) -> type[ModulePass]:
    """Class decorator for a third-party pass: ``passes.default_registry()`` will include it."""
    check_pass_class(cls)
    if cls not in _EXTENSIONS:
        _EXTENSIONS.append(cls)
    return cls


def extension_passes() -> tuple[type[ModulePass], ...]:
    """Passes added by :func:`register_pass` or the ``ssmcompile.passes`` entry points."""
    found = list(_EXTENSIONS)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break ours
            raise PassError(f"entry point {ep.name!r} of {ENTRY_POINT_GROUP} failed to load: "
                            f"{type(err).__name__}: {err}") from None
        items = loaded if isinstance(loaded, (list, tuple)) else [loaded]
        found += [c for c in items if isinstance(c, type) and issubclass(c, ModulePass)]
    return tuple(dict.fromkeys(found))


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


def option_fields(cls: type) -> dict[str, tuple[type | None, object]]:
    """Option name → (owning nested dataclass or None, type hint) for a pass class."""
    out: dict[str, tuple[type | None, object]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            sub = typing.get_type_hints(hint)
            out.update({g.name: (hint, sub[g.name]) for g in dataclasses.fields(hint)})
        else:
            out[f.name] = (None, hint)
    return out


def build_pass(cls: type[ModulePass], options: dict[str, str]) -> ModulePass:
    """``cls`` built from text options (nested dataclass options gathered into their field)."""
    fields = option_fields(cls)
    direct: dict[str, object] = {}
    nested: dict[type, dict[str, object]] = {}
    for key, raw in options.items():
        if key not in fields:
            raise PassError(
                f"pass {cls.name!r} has no option {key!r} (options: {', '.join(fields)})")
        owner, hint = fields[key]
        value = _convert(cls.name, key, raw, hint)
        (nested.setdefault(owner, {}) if owner is not None else direct)[key] = value
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] in nested:
            direct[f.name] = hints[f.name](**nested[hints[f.name]])
    try:
        return cls(**direct)
    except (TypeError, ValueError) as err:
        raise PassError(f"pass {cls.name!r}: {err}") from None


def parse_pipeline(text: str, registry: PassRegistry) -> list[ModulePass]:
    """Parse a pipeline string against ``registry``; unknown names and options are PassErrors."""
    if not isinstance(registry, PassRegistry):
        raise PassError("parse_pipeline needs a PassRegistry (e.g. passes.default_registry())")
    passes: list[ModulePass] = []
    for item in _split_items(text):
        name, brace, rest = item.partition("{")
        cls = registry[name.strip()]
        body = rest[:-1] if brace else ""
        options: dict[str, str] = {}
        for token in body.replace(",", " ").split():
            key, eq, raw = token.partition("=")
            if not eq:
                raise PassError(f"pass {cls.name!r}: option {token!r} needs a value (key=value)")
            options[key] = raw
        passes.append(build_pass(cls, options))
    return passes


def pipeline_text(passes: Iterable[ModulePass]) -> str:
    """The pipeline string of pass objects (parses back to equal passes)."""
    return ",".join(p.spec() for p in passes)


__all__ = ["PassRegistry", "register_pass", "extension_passes", "parse_pipeline",
           "pipeline_text", "check_pass_class", "build_pass", "ENTRY_POINT_GROUP"]
