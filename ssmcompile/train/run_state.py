"""The loop's own state between steps: run flags and the pending pragmatic event.

Typed here and turned into JSON only by the trainer-state file (``state_io``), the one place
they are written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class RunFlags:
    """``run_id`` prefixes checkpoint ids; ``reducing`` is False after a pragmatic rollback
    (at step ``rolled_back_at``); ``best_val_acc``: the best validation score so far."""

    run_id: str
    reducing: bool = True
    rolled_back_at: int | None = None
    best_val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunFlags:
        return cls(run_id=str(d["run_id"]), reducing=bool(d["reducing"]),
                   rolled_back_at=None if d["rolled_back_at"] is None
                   else int(d["rolled_back_at"]),
                   best_val_acc=None if d["best_val_acc"] is None
                   else float(d["best_val_acc"]))


@dataclass(frozen=True)
class PendingEvent:
    """A reduction at ``step`` not yet judged: validation score ``baseline`` just before it."""

    step: int
    baseline: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PendingEvent | None:
        return None if d is None else cls(step=int(d["step"]), baseline=float(d["baseline"]))


__all__ = ["RunFlags", "PendingEvent"]
