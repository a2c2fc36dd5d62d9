"""When reductions happen during training: a typed, explicit reduction schedule.

Steps count completed optimizer updates: an event "at step s" runs after the s-th update and
before the (s+1)-th, so step 0 (an untrained model) is never an event. Each event re-applies the
pipeline's policy to the *current* (already reduced) model, so shrinkage compounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SSMCompileError


class ScheduleError(SSMCompileError, ValueError):
    """A reduction schedule is malformed or does not fit the run's length."""


@dataclass(frozen=True)
class ReductionSchedule:
    """One of four ways to place reduction events (the first that is set wins the check that
    only one is set):

    - ``steps``: explicit steps, each in 1..total−1.
    - ``fractions``: fractions of the run in (0, 1), rounded to steps.
    - ``every``: every N steps, N, 2N, … up to ``end``·total.
    - otherwise ``count`` events evenly spaced in (``start``, ``end``] of the run: fractions
      start + (end − start)·k/count for k = 1..count. The default (count 4, start 0, end 0.10)
      gives the paper's 4 events at 2.5 %, 5 %, 7.5 % and 10 % of training.

    ``count = 0`` (with nothing else set) disables reduction.
    """

    steps: tuple[int, ...] = ()
    fractions: tuple[float, ...] = ()
    every: int | None = None
    count: int = 4
    start: float = 0.0
    end: float = 0.10

    def __post_init__(self) -> None:
        for name in ("steps", "fractions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        chosen = [k for k in ("steps", "fractions") if getattr(self, k)]
        if self.every is not None:
            chosen.append("every")
        if len(chosen) > 1:
            got = ", ".join(chosen)
            raise ScheduleError(f"set only one of steps, fractions, every (got {got})")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.steps):
            raise ScheduleError(f"schedule steps must be ints >= 1, got {list(self.steps)}")
        if any(not 0.0 < f < 1.0 for f in self.fractions):
            raise ScheduleError(f"schedule fractions must be in (0, 1), got {list(self.fractions)}")
        if self.every is not None and (isinstance(self.every, bool) or self.every < 1):
            raise ScheduleError(f"schedule every must be an int >= 1, got {self.every!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ScheduleError(f"schedule count must be an int >= 0, got {self.count!r}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ScheduleError(
                f"schedule needs 0 <= start < end <= 1, got start={self.start}, end={self.end}"
            )

    @classmethod
    def at(cls, *steps: int) -> ReductionSchedule:
        """Events at these explicit steps."""
        return cls(steps=tuple(steps))

    @classmethod
    def never(cls) -> ReductionSchedule:
        return cls(count=0)

    @property
    def needs_total(self) -> bool:
        """Whether the event steps depend on the run's length (all but explicit steps)."""
        return not self.steps

    def event_steps(self, total_steps: int | None) -> tuple[int, ...]:
        """Sorted, distinct event steps in 1..total−1 for a run of ``total_steps`` updates.

        Explicit steps need no total (``None``); with a total they must lie below it.
        Fraction-based events that round to the same step merge; ones rounding to 0 or to the
        total are moved to 1 / total−1 (a run too short for them gets fewer, never step 0).
        """
        if self.steps:
            if total_steps is not None and max(self.steps) >= total_steps:
                raise ScheduleError(
                    f"reduction step {max(self.steps)} is not before the end of the run "
                    f"({total_steps} steps)"
                )
            return tuple(sorted(set(self.steps)))
        if total_steps is None:
            raise ScheduleError("this reduction schedule needs the run's total number of steps")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ScheduleError(f"total steps must be an int >= 1, got {total_steps!r}")
        if total_steps < 2:
            return ()
        if self.every is not None:
            limit = min(int(self.end * total_steps), total_steps - 1)
            return tuple(range(self.every, limit + 1, self.every))
        fractions = self.fractions or tuple(
            self.start + (self.end - self.start) * k / self.count for k in range(1, self.count + 1)
        )
        return tuple(sorted({min(max(round(f * total_steps), 1), total_steps - 1)
                             for f in fractions}))


__all__ = ["ReductionSchedule", "ScheduleError"]
