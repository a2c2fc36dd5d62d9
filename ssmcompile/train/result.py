"""What a training run returns: the final model and a record of what happened to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..io import ReductionEvent
from .records import MetricRecord


@dataclass(frozen=True)
class TrainResult:
    """The outcome of ``Trainer.fit``: the final raw model and what happened to it
    (``metrics``: the typed records of ``train.records``, e.g.
    ``records.of_kind(result.metrics, EvalRecord)``)."""

    model: nn.Module
    history: tuple[ReductionEvent, ...]
    dims_initial: tuple[int, ...]
    dims_final: tuple[int, ...]
    val_acc: float | None
    best_val_acc: float | None
    test_acc: float | None
    steps: int
    seconds: float
    threads: int
    rolled_back_at: int | None
    out_dir: Path | None
    metrics: list[MetricRecord]

    def summary(self) -> str:
        """A small table: state dims before/after, accuracy, time, threads."""
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f} %"

        dims = " / ".join(f"{a} → {b}" for a, b in
                          zip(self.dims_initial, self.dims_final, strict=True))
        rows = [("state dims (per block)", dims),
                ("reduction events", str(len({e.step for e in self.history}))),
                ("val accuracy (final / best)", f"{pct(self.val_acc)} / {pct(self.best_val_acc)}"),
                ("test accuracy (final model)", pct(self.test_acc)),
                ("steps", str(self.steps)),
                ("wall time", f"{self.seconds:.1f} s ({self.threads} thread(s))")]
        if self.rolled_back_at is not None:
            rows.append(("pragmatic rollback at step", str(self.rolled_back_at)))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


__all__ = ["TrainResult"]
