"""Checkpoint metadata: typed records and their str→str (JSON-encoded) safetensors form.

Decoding checks structure and types only; whether the spec is valid and the history replays
is the builder's business (``checkpoint.validate_meta``).
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, safe_text
from .limits import MAX_HISTORY, MAX_NAME, MAX_TEXT, check_json, check_name

FORMAT_VERSION = 1
META_KEYS = ("format_version", "builder", "spec", "initial_spec", "history", "versions", "extra")
EVENT_KEYS = ("step", "block", "n", "r", "hsv_kept", "bound")


@dataclass(frozen=True)
class ReductionEvent:
    """Block ``block`` went from ``n`` to ``r`` states at training step ``step``.

    ``hsv_kept``: the kept Hankel singular values (flattened over a batch for multi-SISO
    layers, so its length need not equal ``r``); ``bound``: the certified H∞ bound 2·Σ tail.
    """

    step: int
    block: str
    n: int
    r: int
    hsv_kept: tuple[float, ...]
    bound: float

    def __post_init__(self) -> None:
        # accept numpy/torch scalars from callers, store plain Python numbers
        try:
            hsv = tuple(float(s) for s in self.hsv_kept)
            bound = float(self.bound)
        except (TypeError, ValueError):
            raise CheckpointError(
                f"reduction event for {self.block!r}: hsv_kept and bound must be numbers"
            ) from None
        object.__setattr__(self, "hsv_kept", hsv)
        object.__setattr__(self, "bound", bound)
        for name in ("step", "n", "r"):
            v = getattr(self, name)
            if hasattr(v, "__index__") and not isinstance(v, bool):
                with contextlib.suppress(TypeError):  # _check_event names the bad field
                    object.__setattr__(self, name, operator.index(v))
        _check_event(self)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "block": self.block, "n": self.n, "r": self.r,
                "hsv_kept": list(self.hsv_kept), "bound": self.bound}

    @classmethod
    def from_dict(cls, d: object) -> ReductionEvent:
        """Inverse of ``to_dict``; CheckpointError on missing/unknown keys or wrong types."""
        if not isinstance(d, dict) or set(d) != set(EVENT_KEYS):
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise CheckpointError(f"reduction event needs keys {list(EVENT_KEYS)}, got "
                                  f"{safe_text(keys, 200)}")
        hsv = d["hsv_kept"]
        if not isinstance(hsv, list) or not all(_is_real(s) for s in hsv):
            raise CheckpointError("reduction event hsv_kept must be a list of finite numbers")
        if not _is_real(d["bound"]):
            raise CheckpointError("reduction event bound must be a finite number: "
                                  f"{safe_text(repr(d['bound']), 60)}")
        return cls(step=d["step"], block=d["block"], n=d["n"], r=d["r"], hsv_kept=tuple(hsv),
                   bound=d["bound"])


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_event(e: ReductionEvent) -> None:
    where = f"reduction event at step {safe_text(e.step, 40)} for {safe_text(e.block, 80)!r}"
    if not (_is_int(e.step) and e.step >= 0):
        raise CheckpointError(f"{where}: step must be an int >= 0")
    if not (isinstance(e.block, str) and e.block):
        raise CheckpointError(f"{where}: block must be a non-empty string")
    check_name(e.block, f"{where}: block")
    if not (_is_int(e.n) and _is_int(e.r) and 0 < e.r < e.n):
        raise CheckpointError(f"{where}: need ints 0 < r < n, got n={safe_text(e.n, 40)}, "
                              f"r={safe_text(e.r, 40)}")
    if not all(math.isfinite(s) and s >= 0 for s in e.hsv_kept):
        raise CheckpointError(f"{where}: hsv_kept must be finite and >= 0")
    if not (math.isfinite(e.bound) and e.bound >= 0):
        raise CheckpointError(f"{where}: bound must be finite and >= 0")


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself besides its weights.

    ``spec``: the current architecture (builder-specific, JSON-able); ``initial_spec``: the
    architecture before any reduction; ``history``: the reductions that turn one into the other;
    ``versions``: library versions that wrote it; ``extra``: free str→str (e.g. ``step``).
    """

    format_version: int
    builder: str
    spec: dict[str, Any]
    initial_spec: dict[str, Any]
    history: tuple[ReductionEvent, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def _dumps(value: object, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{what} is not JSON-able: {err}") from None


def encode_meta(meta: CheckpointMeta) -> dict[str, str]:
    """The str→str safetensors metadata for ``meta`` (every field JSON-encoded)."""
    return {
        "format_version": _dumps(meta.format_version, "format_version"),
        "builder": _dumps(meta.builder, "builder"),
        "spec": _dumps(meta.spec, "spec"),
        "initial_spec": _dumps(meta.initial_spec, "initial_spec"),
        "history": _dumps([e.to_dict() for e in meta.history], "history"),
        "versions": _dumps(meta.versions, "versions"),
        "extra": _dumps(meta.extra, "extra"),
    }


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _loads(metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        raise CheckpointError(f"metadata lacks {key!r} (not an ssmcompile checkpoint?)")
    try:
        return json.loads(metadata[key], parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise CheckpointError(f"metadata {key!r} is not valid JSON") from None


def _str_dict(value: object, key: str, value_limit: int = MAX_NAME) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CheckpointError(f"metadata {key!r} must be an object of strings")
    for k, v in value.items():
        check_name(k, f"metadata {key!r} key")
        check_name(v, f"metadata {key}[{safe_text(k, 60)!r}]", value_limit)
    return value


def check_meta_sizes(meta: CheckpointMeta) -> None:
    """The absolute caps of ``limits`` on everything but the builder's own spec checks; also
    run on save, so nothing written is refused on load."""
    check_name(meta.builder, "metadata 'builder'")
    check_json(meta.spec, "metadata 'spec'")
    check_json(meta.initial_spec, "metadata 'initial_spec'")
    if len(meta.history) > MAX_HISTORY:
        raise CheckpointError(f"history has {len(meta.history)} events (at most {MAX_HISTORY})")
    _str_dict(meta.versions, "versions")
    _str_dict(meta.extra, "extra", MAX_TEXT)


def decode_meta(metadata: dict[str, str]) -> CheckpointMeta:
    """Parse and type-check the metadata (format version first, so newer files say so)."""
    version = _loads(metadata, "format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError("format_version must be an int >= 1, got "
                              f"{safe_text(repr(version), 60)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"format_version {version} is newer than this ssmcompile supports ({FORMAT_VERSION});"
            " upgrade ssmcompile"
        )
    unknown = sorted(set(metadata) - set(META_KEYS))
    if unknown:
        raise CheckpointError(f"unexpected metadata keys: {safe_text(', '.join(unknown), 200)}")
    builder = _loads(metadata, "builder")
    if not isinstance(builder, str) or not builder:
        raise CheckpointError("metadata 'builder' must be a non-empty string")
    check_name(builder, "metadata 'builder'")
    spec, initial = _loads(metadata, "spec"), _loads(metadata, "initial_spec")
    for key, value in (("spec", spec), ("initial_spec", initial)):
        if not isinstance(value, dict):
            raise CheckpointError(f"metadata {key!r} must be a JSON object")
        check_json(value, f"metadata {key!r}")
    history = _loads(metadata, "history")
    if not isinstance(history, list):
        raise CheckpointError("metadata 'history' must be a JSON list")
    if len(history) > MAX_HISTORY:
        raise CheckpointError(f"history has {len(history)} events (at most {MAX_HISTORY})")
    return CheckpointMeta(
        format_version=version,
        builder=builder,
        spec=spec,
        initial_spec=initial,
        history=tuple(ReductionEvent.from_dict(e) for e in history),
        versions=_str_dict(_loads(metadata, "versions"), "versions"),
        extra=_str_dict(_loads(metadata, "extra"), "extra", MAX_TEXT),
    )
