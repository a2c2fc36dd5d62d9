"""One reduction event, and ``ReductionScheduler`` for users who keep their own training loop.

An event runs the pipeline on the current model (which the pipeline never mutates), takes its
output as the new model, and moves the optimizer onto it in place (``optim_surgery``). It runs
inside ``torch.random.fork_rng``, so an event never shifts the data or dropout random stream:
a run that reduces at step s draws the same random numbers afterwards as one resumed at s.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from ..api import run_pipeline
from ..compiler import CompileState, ModulePass, Report
from ..compiler.precision import describe_exception
from ..io import ReductionEvent, unwrap_module
from .optim_surgery import SwapSummary, swap_parameters
from .schedule import ReductionSchedule

Pipeline = str | Sequence[ModulePass]


@dataclass(frozen=True)
class AppliedReduction:
    """What one event did.

    ``events``: one ``ssmcompile.io.ReductionEvent`` per block that shrank (what checkpoints
    store as history); ``dims_before`` / ``dims_after``: block name → state dimension for every
    matched block; ``spectra``: block name → all its HSVs before truncation (descending);
    ``report``: the pipeline's report; ``swap``: which parameters kept their optimizer state.
    """

    step: int
    events: tuple[ReductionEvent, ...]
    dims_before: dict[str, int]
    dims_after: dict[str, int]
    spectra: dict[str, tuple[float, ...]]
    report: Report
    swap: SwapSummary | None
    seconds: float

    def summary(self) -> str:
        parts = [f"{e.block} {e.n}→{e.r}" for e in self.events]
        return f"step {self.step}: " + ", ".join(parts)


def reduce_model(model: nn.Module, optimizer: Optimizer | None, pipeline: Pipeline,
                 example_inputs, step: int) -> tuple[nn.Module, AppliedReduction | None]:
    """Run ``pipeline`` on ``model`` (raw module, or a compiled/DDP wrapper around one).

    Returns ``(new_model, applied)`` — the pipeline's output re-tied to the kept parameters,
    with ``optimizer`` (if any) moved onto it in place, and the model's train/eval mode kept —
    or ``(raw model, None)`` when no block shrank. Errors of the pipeline propagate.
    """
    raw = unwrap_module(model)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)  # nothing stale is deep-copied or reused
        new, report, state = run_pipeline(raw, example_inputs, pipeline)
    if not state.records:
        return raw, None
    new.train(raw.training)
    swap = swap_parameters(optimizer, raw, new) if optimizer is not None else None
    after = {b.name: b.adapter.state_dim(new.get_submodule(b.name)) for b in state.blocks}
    before = {row.name: row.state_dim for row in report.blocks}
    events = history_events(state, step)
    spectra = {row.name: row.hsv for row in report.blocks}
    applied = AppliedReduction(step, events, before, after, spectra, report, swap,
                               time.perf_counter() - start)
    return new, applied


def history_events(state: CompileState, step: int) -> tuple[ReductionEvent, ...]:
    """One checkpoint-history event per block the pipeline shrank, in model order, read from
    the pipeline's block records: n before the whole pipeline → its final r, with the summed
    bound (for data-driven blocks, which have none, the summed 2·Σ discarded surrogate σ)."""
    events = []
    for b in state.initial_blocks:
        rec = state.records.get(b.name)
        if rec is None:
            continue
        events.append(ReductionEvent(step=step, block=rec.name, n=rec.n_before, r=rec.rank,
                                     hsv_kept=rec.hsv_kept,
                                     bound=rec.bound if rec.bound is not None else rec.tail))
    return tuple(events)


class ReductionScheduler:
    """Reductions inside your own training loop: call ``step`` once per optimizer step.

    ``pipeline``: a pipeline string or pass objects (e.g.
    ``passes.default_pipeline(RankPolicy(tau=0.05))``); ``schedule``: a
    ``ReductionSchedule`` (fractions need ``total_steps``) or explicit step numbers;
    ``example_inputs``: a fixed batch (tensor or tuple of forward arguments) the pipeline
    analyses and verifies on.

    ``model, optimizer, event = reducer.step(model, optimizer, step)``, with ``step`` the
    number of optimizer updates done so far, returns the model to keep training: at an event
    step the pipeline's (smaller) output — ``optimizer`` is edited in place to hold its
    parameters (kept parameters keep their AdamW state; reduced ones start fresh; the LR
    scheduler is untouched) — else the same model. ``event`` is an ``AppliedReduction`` or
    ``None``. A compiled or DDP-wrapped model is unwrapped: wrap the returned raw model again
    after an event (``torch._dynamo.reset()`` first when compiling).

    Any error of the pipeline (ours, or one raised inside the user's modules) skips that event
    with a warning, leaving model and optimizer as they were (``strict=True`` raises instead).
    ``history`` holds every block's ``ReductionEvent`` so far, ready for
    ``ssmcompile.io.save_checkpoint(..., history=reducer.history)``.
    """

    def __init__(self, pipeline: Pipeline, schedule: ReductionSchedule | Iterable[int],
                 example_inputs, *, total_steps: int | None = None, strict: bool = False):
        if not isinstance(schedule, ReductionSchedule):
            schedule = ReductionSchedule(steps=tuple(int(s) for s in schedule))
        self.pipeline = pipeline
        self.schedule = schedule
        self.event_steps = schedule.event_steps(total_steps)
        self.example_inputs = example_inputs
        self.strict = strict
        self.history: list[ReductionEvent] = []
        self.applied: list[AppliedReduction] = []
        self.skipped: list[tuple[int, str]] = []

    def step(self, model: nn.Module, optimizer: Optimizer, step: int
             ) -> tuple[nn.Module, Optimizer, AppliedReduction | None]:
        if step not in self.event_steps:
            return model, optimizer, None
        try:
            new, applied = reduce_model(model, optimizer, self.pipeline, self.example_inputs,
                                        step)
        except Exception as err:  # noqa: BLE001 - any failure skips the event unless strict
            if self.strict:
                raise
            self.skipped.append((step, describe_exception(err)))
            warnings.warn(f"reduction at step {step} skipped: {err}", stacklevel=2)
            return model, optimizer, None
        if applied is None:
            return model, optimizer, None
        self.history.extend(applied.events)
        self.applied.append(applied)
        return new, optimizer, applied


__all__ = ["AppliedReduction", "reduce_model", "history_events", "ReductionScheduler",
           "Pipeline"]
