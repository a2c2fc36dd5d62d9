"""The loop's metric records, typed: one dataclass per kind of thing that happened.

They travel as these classes (the trainer, the plots, ``TrainResult.metrics``) and become JSON
only where they are written: ``metrics.jsonl`` and the trainer-state file, one object per
record with its ``"kind"`` (``train``, ``eval``, ``reduction``, ``skipped``, ``rollback``) and
the fields below (tuples as lists) — the layout the log always had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..errors import CheckpointError

if TYPE_CHECKING:
    from .reducer import AppliedReduction


@dataclass(frozen=True)
class TrainRecord:
    """Means over the ``log_every`` steps up to ``step``: loss, score (``acc``), and the rate."""

    kind: ClassVar[str] = "train"
    step: int
    loss: float
    acc: float
    lr: float
    dims: tuple[int, ...]
    steps_per_s: float
    threads: int


@dataclass(frozen=True)
class EvalRecord:
    """Validation loss and score at ``step``, and the state dims then."""

    kind: ClassVar[str] = "eval"
    step: int
    val_loss: float
    val_acc: float
    dims: tuple[int, ...]


@dataclass(frozen=True)
class BlockReduction:
    """One block at an event: ``n`` → ``r`` states, the bound (None if measured only) and every
    Hankel singular value before truncation (descending)."""

    n: int
    r: int
    bound: float | None
    hsv: tuple[float, ...]


@dataclass(frozen=True)
class ReductionRecord:
    """An event at ``step``: every block's dims before and after (model order), the blocks
    that shrank, and how long the pipeline took."""

    kind: ClassVar[str] = "reduction"
    step: int
    seconds: float
    dims_before: tuple[int, ...]
    dims_after: tuple[int, ...]
    blocks: Mapping[str, BlockReduction]

    @classmethod
    def of(cls, applied: AppliedReduction, blocks: Sequence[str]) -> ReductionRecord:
        """The record of an event that ``reduce_model`` applied (``blocks``: model order)."""
        return cls(applied.step, applied.seconds,
                   tuple(applied.dims_before[b] for b in blocks),
                   tuple(applied.dims_after[b] for b in blocks),
                   {e.block: BlockReduction(e.n, e.r, e.bound, tuple(applied.spectra[e.block]))
                    for e in applied.events})


@dataclass(frozen=True)
class SkippedRecord:
    """An event whose pipeline failed (the run went on without it), and why."""

    kind: ClassVar[str] = "skipped"
    step: int
    reason: str


@dataclass(frozen=True)
class RollbackRecord:
    """Pragmatic mode gave the event at ``event_step`` back at ``step``: ``val_acc`` fell below
    ``baseline``; the dims went from ``dims_from`` to ``dims_to``."""

    kind: ClassVar[str] = "rollback"
    step: int
    val_acc: float
    baseline: float
    event_step: int
    dims_from: tuple[int, ...]
    dims_to: tuple[int, ...]


MetricRecord = TrainRecord | EvalRecord | ReductionRecord | SkippedRecord | RollbackRecord
KINDS: dict[str, type] = {c.kind: c for c in (TrainRecord, EvalRecord, ReductionRecord,
                                              SkippedRecord, RollbackRecord)}
R = TypeVar("R")


def of_kind(records: Iterable[MetricRecord], cls: type[R]) -> list[R]:
    """The records of one class, in order."""
    return [r for r in records if isinstance(r, cls)]


def record_to_json(record: MetricRecord) -> dict[str, Any]:
    return {"kind": record.kind, **dataclasses.asdict(record)}


def record_from_json(data: Mapping[str, Any]) -> MetricRecord:
    """The record a ``record_to_json`` dict describes; CheckpointError if it is not one."""
    try:
        cls = KINDS[data["kind"]]
        fields = {k: v for k, v in data.items() if k != "kind"}
        if cls is ReductionRecord:
            fields["blocks"] = {name: BlockReduction(b["n"], b["r"], b["bound"], tuple(b["hsv"]))
                                for name, b in fields["blocks"].items()}
        for name in ("dims", "dims_before", "dims_after", "dims_from", "dims_to"):
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"not a metric record ({type(err).__name__}: {err})") from None


def records_to_json(records: Sequence[MetricRecord]) -> list[dict[str, Any]]:
    return [record_to_json(r) for r in records]


def records_from_json(data: Sequence[Mapping[str, Any]]) -> list[MetricRecord]:
    return [record_from_json(d) for d in data]


__all__ = ["TrainRecord", "EvalRecord", "BlockReduction", "ReductionRecord", "SkippedRecord",
           "RollbackRecord", "MetricRecord", "of_kind", "record_to_json", "record_from_json",
           "records_to_json", "records_from_json"]
