"""One small JSON file per finished (experiment, arm, seed) run: the campaign's resumable cache.

The files live under ``docs/results/runs/<experiment>/`` and are committed, so a campaign
continues on another machine where the last one stopped. Each file records the hash of the
full spec that produced it (``spec_hash``); a run is redone when its file is missing or was
made from a different spec (a changed recipe reruns, and its new file replaces the old one).
``recipe_hash`` names the recipe shared by all arms, so the report aggregates one recipe only.
Files are written atomically (``ssmcompile.io.write_bytes_atomic``) the moment a run ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stability import Settledness

from ssmcompile.io import write_bytes_atomic

KINDS = ("full", "in-training", "scratch", "post-training")


def spec_hash(spec: Any) -> str:
    """Hash of a spec's canonical JSON (a dataclass, or a JSON-able value)."""
    data = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else spec
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """What the report needs of one run. Accuracies are fractions; ``best_val_test_acc`` is the
    test accuracy at the best validation point of the final size (the paper's protocol);
    ``settledness``: the full runs' ranking at the event steps against the end of training."""

    experiment: str
    arm: str
    kind: str
    tau: float | None
    seed: int
    steps: int
    spec_hash: str
    recipe_hash: str
    dims_final: tuple[int, ...]
    test_acc: float
    best_val_test_acc: float | None
    wall_s: float
    cpu_s: float
    threads: int
    load_avg: tuple[float, float]
    event_steps: tuple[int, ...] = ()
    settledness: tuple[Settledness, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown arm kind {self.kind!r} (one of {', '.join(KINDS)})")

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        for key in ("dims_final", "load_avg", "event_steps"):
            values[key] = tuple(values.get(key, ()))
        values["settledness"] = tuple(
            Settledness(step=s["step"], block=s["block"], kendall=s["kendall"],
                        topr=tuple((float(t), int(r), float(o)) for t, r, o in s["topr"]))
            for s in data.get("settledness", ()))
        return cls(**values)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "=.-" else "_" for c in text)


class RunStore:
    """The run files of one results directory (``root`` = ``docs/results/runs``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, experiment: str, arm: str, seed: int) -> Path:
        return self.root / experiment / f"{_slug(arm)}__seed{seed}.json"

    def load(self, experiment: str, arm: str, seed: int, key: str) -> RunRecord | None:
        """The finished run with spec hash ``key``, or None (missing, or another spec's)."""
        record = _read(self.path(experiment, arm, seed))
        return record if record is not None and record.spec_hash == key else None

    def save(self, record: RunRecord, spec: Any) -> Path:
        """Write ``record`` with the spec it came from (for people reading the file)."""
        data = dataclasses.asdict(record)
        data["spec"] = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else spec
        path = self.path(record.experiment, record.arm, record.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
        return write_bytes_atomic(path, text.encode())

    def all(self, experiment: str) -> tuple[list[RunRecord], int]:
        """Every run file of ``experiment`` in file-name order, and how many were unreadable."""
        folder = self.root / experiment
        paths = sorted(folder.glob("*__seed*.json")) if folder.is_dir() else []
        records = [r for r in map(_read, paths) if r is not None]
        return records, len(paths) - len(records)


def _read(path: Path) -> RunRecord | None:
    """The record in ``path``; None when absent or not in this version's format (a file of an
    older harness is then simply rerun, like one of another spec)."""
    if not path.exists():
        return None
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


__all__ = ["KINDS", "RunRecord", "RunStore", "spec_hash"]


def campaign_parser(doc: str) -> argparse.ArgumentParser:
    """The options every seed campaign shares: which seeds, and the smoke-test recipe."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 … N−1 (default 5)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke-test recipe")
    return p

