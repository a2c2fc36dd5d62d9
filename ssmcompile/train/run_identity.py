"""What a run directory is a run *of*: ``DIR/run.json``, and whether a requested config may
continue it.

``run.json`` is written when a run starts (and again when a resume overrides fields)::

    {"format": "ssmcompile-run", "version": 1, "run_id": "…", "builder": "ssm-model",
     "config": {... TrainConfig.to_dict() ...}, "data": "<sha256 of the training data>",
     "overrides": [{"step": 120, "fields": ["steps"]}]}

The run id prefixes every checkpoint id of the run, so resume only ever picks the run's own
checkpoints. On resume the requested config is compared with the stored one field by field:

- *free* fields (``FREE_FIELDS``) may differ silently: they decide where and how often the
  state is written or shown, never a number the run computes (the scan kernels' results do
  not depend on ``scan_threads``). ``data.path`` is free as text: the data are compared by
  their fingerprint instead, so moved data resume and changed data do not;
- *overridable* fields (``OVERRIDABLE``) may differ when the user names them
  (``--override steps``): they change the run from that step on without making the saved state
  mean something else — the run is then no longer bit-identical to an uninterrupted one;
- every other field (model, data, optimizer, schedule, pipeline and τ, seed, pragmatic mode,
  probe size) is the experiment itself; a difference is refused, naming every field.

A stored config is input from a file: it is validated like a user's config, and its
``data.path`` is not opened unless it lies inside the run directory or the user passes the
path again (``stored_config``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, safe_text
from ..io import write_bytes_atomic
from .config import ConfigError, TrainConfig
from .data import TaskData

RUN_FILE = "run.json"
RUN_FORMAT = "ssmcompile-run"
RUN_VERSION = 1
MAX_RUN_FILE = 1 << 20  # a run.json is a few KB; a larger one is not ours
RUN_ID = re.compile(r"[0-9a-f]{14}")  # 56 random bits: fits the int64 DDP broadcasts

FREE_FIELDS = frozenset({"out_dir", "progress", "scan_threads", "keep_last", "checkpoint_every",
                         "data.path"})
OVERRIDABLE = frozenset({"steps", "threads", "device", "compile", "compile_backend",
                         "eval_every", "log_every", "strict_reduction"})


@dataclass(frozen=True)
class RunIdentity:
    """``config``: the stored ``TrainConfig.to_dict()``; ``data``: the data fingerprint
    (empty for a run written before identities, whose data cannot be checked)."""

    run_id: str
    builder: str
    config: dict[str, Any]
    data: str
    overrides: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps({"format": RUN_FORMAT, "version": RUN_VERSION, "run_id": self.run_id,
                           "builder": self.builder, "config": self.config, "data": self.data,
                           "overrides": list(self.overrides)}, indent=1, sort_keys=True,
                          allow_nan=False)

    def stored_config(self) -> TrainConfig:
        return validated_config(self.config)


def validated_config(stored: dict[str, Any]) -> TrainConfig:
    """A stored config, validated like a user's (``ConfigError`` naming the problem)."""
    try:
        return TrainConfig.from_dict(stored)
    except ConfigError as err:
        raise ConfigError(f"the run's stored config is invalid: {err}") from None


def read_identity(root: Path) -> RunIdentity | None:
    """``root/run.json``, or None when there is none; CheckpointError when it is malformed."""
    path = root / RUN_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RUN_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a run identity file ({why})")

    if len(raw) > MAX_RUN_FILE:
        raise bad(f"larger than {MAX_RUN_FILE} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not valid JSON") from None
    if not isinstance(body, dict) or body.get("format") != RUN_FORMAT:
        raise bad(f"format is not {RUN_FORMAT!r}")
    if body.get("version") != RUN_VERSION:
        raise bad(f"unsupported version {safe_text(body.get('version'), 40)}")
    run_id, builder, config = body.get("run_id"), body.get("builder"), body.get("config")
    data, overrides = body.get("data"), body.get("overrides", [])
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise bad("run_id is not a hex id")
    if not isinstance(builder, str) or not builder or len(builder) > 200:
        raise bad("builder is not a name")
    if not isinstance(config, dict):
        raise bad("config is not a table")
    if not isinstance(data, str) or not re.fullmatch(r"([0-9a-f]{64})?", data):
        raise bad("data is not a sha256 fingerprint")
    if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
        raise bad("overrides is not a list of records")
    return RunIdentity(run_id, builder, config, data, tuple(overrides))


def write_identity(root: Path, identity: RunIdentity) -> None:
    write_bytes_atomic(root / RUN_FILE, identity.to_json().encode())


def data_fingerprint(data: TaskData) -> str:
    """sha256 over every split's tensors (dtype, shape, bytes) and the task's description."""
    h = hashlib.sha256()
    h.update(json.dumps([data.name, data.task, data.n_classes, data.d_input, data.vocab_size,
                         data.vocab]).encode("utf-8", "surrogatepass"))
    for split in (data.train, data.val, data.test):
        for t in (() if split is None else (split.x, split.y)):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy())
    return h.hexdigest()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_diff(stored: TrainConfig, requested: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(field, stored, requested)`` for every compared field that differs, in field order."""
    a, b = flatten(stored.to_dict()), flatten(requested.to_dict())
    return [(k, a[k], b[k]) for k in a if k not in FREE_FIELDS and a[k] != b[k]]


def check_overrides(names: Collection[str]) -> frozenset[str]:
    """The override field names, each one a field that may change on resume."""
    known = flatten(TrainConfig().to_dict())
    for name in names:
        if name not in known:
            raise ConfigError(f"--override {safe_text(name, 80)}: no such config field")
        if name not in OVERRIDABLE:
            why = ("it may differ without --override" if name in FREE_FIELDS
                   else "it cannot change on resume")
            raise ConfigError(f"--override {name}: {why} (fields that can: "
                              f"{', '.join(sorted(OVERRIDABLE))})")
    return frozenset(names)


def _show(value: Any) -> str:
    return safe_text(repr(value), 80)


def check_resume(identity: RunIdentity, requested: TrainConfig, data: str, builder: str,
                 override: Collection[str]) -> list[str]:
    """The overridden fields that differ (the caller records them); ``ConfigError`` naming
    every refused difference, or when the data or the model builder differ."""
    if identity.builder != builder:
        raise ConfigError(f"--resume: the run trains model {safe_text(identity.builder, 80)!r}, "
                          f"this one {builder!r}")
    diffs = config_diff(identity.stored_config(), requested)
    refused = [d for d in diffs if d[0] not in override]
    if refused:
        shown = "; ".join(f"{k} {_show(new)} != {_show(old)}" for k, old, new in refused[:5])
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        fixed = [k for k, _, _ in refused if k not in OVERRIDABLE]
        hint = (f"{fixed[0]}{' and others' if len(fixed) > 1 else ''} cannot change on resume: "
                "start a new run in another --out" if fixed
                else "pass --override " + ",".join(k for k, _, _ in refused)
                + " to continue with the new values")
        raise ConfigError(f"--resume: config differs from the run's stored config (requested != "
                          f"stored): {shown}{more} ({hint})")
    if identity.data and data != identity.data:
        raise ConfigError(f"--resume: the training data differ from the run's (fingerprint "
                          f"{data[:12]} != {identity.data[:12]}); start a new run instead")
    return [k for k, _, _ in diffs]


def stored_config(root: str | Path, data_path: str | None = None) -> TrainConfig:
    """The config a run directory stores, for a resume that names no config of its own: from
    ``run.json`` (or, for runs written before it, from ``last.safetensors``), validated;
    ``data.path`` is replaced by ``data_path`` when given, and refused when it points outside
    the run directory (a stored file never makes us open a path the user did not name)."""
    root = Path(root)
    identity = read_identity(root)
    if identity is not None:
        config = identity.stored_config()
    else:
        config = _legacy_config(root)
    if data_path is not None:
        return config.replace(data=_replace(config.data, path=data_path))
    path = config.data.path
    if path is not None and not _inside(root, path):
        raise ConfigError(f"the run's stored data.path {safe_text(repr(path), 200)} is outside "
                          f"{root}: pass --data-path again to resume")
    return config


def _legacy_config(root: Path) -> TrainConfig:
    from ..io import read_checkpoint_meta

    path = root / "last.safetensors"
    if not path.exists():
        raise CheckpointError(f"nothing to resume in {root} (no run there); pass CONFIG.toml or "
                              "--preset to start one")
    stored = read_checkpoint_meta(path).extra.get("config")
    if stored is None:
        raise ConfigError(f"{path} holds no training config; pass CONFIG.toml or --preset")
    return validated_config(parse_config_json(stored, path))


def parse_config_json(text: str, where: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigError(f"{where}: the stored config is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: the stored config is not a table of keys")
    return value


def _inside(root: Path, path: str) -> bool:
    try:
        return Path(path).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def _replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


__all__ = ["RunIdentity", "read_identity", "write_identity", "data_fingerprint", "config_diff",
           "check_overrides", "check_resume", "stored_config", "parse_config_json",
           "FREE_FIELDS", "OVERRIDABLE", "RUN_FILE"]
