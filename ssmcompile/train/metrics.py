"""Training metrics: a JSONL log (one JSON object per line) and PNG plots (matplotlib Agg).

The records are the typed ones of ``records`` (``train``, ``eval``, ``reduction`` with every
block's full spectrum before truncation, ``skipped``, ``rollback``); a line is
``records.record_to_json``. The trainer keeps every record in its state file, so a resumed run
rewrites the log exactly as far as its checkpoint got.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..io import write_bytes_atomic
from .records import (
    EvalRecord,
    MetricRecord,
    ReductionRecord,
    RollbackRecord,
    TrainRecord,
    of_kind,
    record_to_json,
)


class MetricsLog:
    """Records in memory, mirrored to ``path`` (JSONL) when given."""

    def __init__(self, path: str | os.PathLike[str] | None,
                 records: Iterable[MetricRecord] = ()):
        self.path = Path(path) if path is not None else None
        self.records: list[MetricRecord] = list(records)
        if self.path is not None:  # start the file from exactly what we know
            write_bytes_atomic(self.path, "".join(_line(r) for r in self.records).encode())

    def append(self, record: MetricRecord) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(_line(record))


def _line(record: MetricRecord) -> str:
    return json.dumps(record_to_json(record), allow_nan=False, sort_keys=True) + "\n"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The log's lines as JSON objects (``records.record_from_json`` makes them records)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return write_bytes_atomic(path, buf.getvalue())


def plot_hsv_spectra(records: list[MetricRecord], path: str | os.PathLike[str]) -> Path:
    """One panel per block: σ_i / σ_1 (log scale) at every reduction event, coloured by step."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    events = of_kind(records, ReductionRecord)
    names = sorted({b for r in events for b in r.blocks})
    fig = Figure(figsize=(4.2 * max(1, len(names)), 3.2))
    axes = [fig.add_subplot(1, max(1, len(names)), i + 1) for i in range(max(1, len(names)))]
    for ax, name in zip(axes, names, strict=False):
        for k, r in enumerate(events):
            block = r.blocks.get(name)
            if not block or not block.hsv:
                continue
            top = max(block.hsv[0], 1e-300)
            colour = (k / max(1, len(events) - 1), 0.2, 1 - k / max(1, len(events) - 1))
            ax.semilogy(range(1, len(block.hsv) + 1), [s / top for s in block.hsv],
                        color=colour, label=f"step {r.step}: {block.n}→{block.r}")
            ax.axvline(block.r + 0.5, color=colour, lw=0.6, ls=":")
        ax.set_title(f"HSV spectrum, {name}")
        ax.set_xlabel("i")
        ax.set_ylabel("σ_i / σ_1")
        ax.legend(fontsize=7)
    return _save(fig, Path(path))


def _dims_over_time(records: list[MetricRecord]) -> tuple[list[int], list[int]]:
    """Total state dimension as a step function: from step 0, changing at events/rollbacks."""
    steps: list[int] = []
    dims: list[int] = []
    for r in records:
        if isinstance(r, ReductionRecord):
            if not steps:
                steps.append(0)
                dims.append(sum(r.dims_before))
            steps.append(r.step)
            dims.append(sum(r.dims_after))
        elif isinstance(r, RollbackRecord):
            steps.append(r.step)
            dims.append(sum(r.dims_to))
        elif isinstance(r, TrainRecord | EvalRecord) and not steps:
            steps.append(0)
            dims.append(sum(r.dims))
    last = max((r.step for r in records), default=0)
    if steps and last > steps[-1]:
        steps.append(last)
        dims.append(dims[-1])
    return steps, dims


def plot_training(records: list[MetricRecord], path: str | os.PathLike[str]) -> Path:
    """Accuracy (train, validation) and total state dimension against the step."""
    from matplotlib.figure import Figure

    train, evals = of_kind(records, TrainRecord), of_kind(records, EvalRecord)
    fig = Figure(figsize=(8.5, 3.2))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot([r.step for r in train], [r.acc for r in train], lw=0.8, label="train (batch)")
    ax1.plot([r.step for r in evals], [r.val_acc for r in evals], "o-", label="validation")
    ax1.set_xlabel("step")
    ax1.set_ylabel("accuracy")
    ax1.legend(fontsize=8)
    steps, dims = _dims_over_time(records)
    ax2.step(steps, dims, where="post")
    for r in of_kind(records, ReductionRecord):
        ax2.axvline(r.step, color="grey", lw=0.6, ls=":")
    ax2.set_xlabel("step")
    ax2.set_ylabel("total state dimension")
    return _save(fig, Path(path))


__all__ = ["MetricsLog", "read_jsonl", "plot_hsv_spectra", "plot_training"]
