"""Statistics over seeds: the per-arm summary and the paired difference of two arms.

Arms of one seed share the data order, the initialisation of every shape they have in common
and the machine's load (they run back to back), so the seed-to-seed spread largely cancels in
the per-seed difference: its standard error, not the two arms' separate spreads, is what says
whether a 0.5 pt gap is resolved.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

TOP = 3  # the paper reports the mean of the best 3 of 5–10 seeds


@dataclass(frozen=True)
class Summary:
    """One arm's values over seeds: mean, sample std, the paper's top-3 mean."""

    n: int
    mean: float | None
    std: float | None
    top3: float | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class Paired:
    """Mean and standard error of a − b over the seeds both arms have (None below 2 seeds)."""

    n: int
    mean: float | None
    se: float | None


def summarise(values: Iterable[float | None], top: int = TOP) -> Summary:
    """``None`` values (a run that measured nothing) are left out."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return Summary(0, None, None, None, ())
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Summary(int(v.size), float(v.mean()), std, float(np.sort(v)[::-1][:top].mean()),
                   tuple(v.tolist()))


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """a − b per seed (keys), over the seeds present in both."""
    d = np.asarray([a[s] - b[s] for s in sorted(a.keys() & b.keys())], dtype=float)
    if d.size == 0:
        return Paired(0, None, None)
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else None
    return Paired(int(d.size), float(d.mean()), se)


__all__ = ["TOP", "Summary", "Paired", "summarise", "paired"]
