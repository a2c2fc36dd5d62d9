"""Reduction schedule: where events fall, and that each event compounds on the current model."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.numerics import energy_rank
from ssmcompile.train.config import OptimConfig
from ssmcompile.train.optim_surgery import make_optimizer
from ssmcompile.train.reducer import ReductionScheduler
from ssmcompile.train.schedule import ReductionSchedule, ScheduleError


@pytest.mark.parametrize("total", [40, 1000, 1200, 20000])
def test_default_is_four_events_evenly_spaced_in_first_ten_percent(total):
    steps = ReductionSchedule().event_steps(total)
    assert steps == tuple(round(total * f) for f in (0.025, 0.05, 0.075, 0.10))
    assert len(steps) == 4 and 0 not in steps and max(steps) <= 0.10 * total


def test_paper_schedule_numbers():
    assert ReductionSchedule().event_steps(1000) == (25, 50, 75, 100)
    assert ReductionSchedule(count=2, start=0.1, end=0.3).event_steps(100) == (20, 30)
    assert ReductionSchedule(every=7, end=0.5).event_steps(100) == (7, 14, 21, 28, 35, 42, 49)
    assert ReductionSchedule(fractions=(0.5, 0.25)).event_steps(8) == (2, 4)
    assert ReductionSchedule.at(9, 3, 3).event_steps(None) == (3, 9)
    assert ReductionSchedule.never().event_steps(100) == ()


def test_short_runs_never_fire_at_step_zero_or_at_the_end():
    assert ReductionSchedule().event_steps(3) == (1,)
    assert ReductionSchedule().event_steps(1) == ()
    assert ReductionSchedule(fractions=(0.99,)).event_steps(10) == (9,)


@pytest.mark.parametrize("kwargs", [
    {"steps": (3,), "every": 2}, {"steps": (0,)}, {"fractions": (1.0,)}, {"every": 0},
    {"count": -1}, {"start": 0.2, "end": 0.1}, {"end": 1.5},
])
def test_invalid_schedules_raise(kwargs):
    with pytest.raises(ScheduleError):
        ReductionSchedule(**kwargs)


def test_explicit_step_past_the_end_and_missing_total_raise():
    with pytest.raises(ScheduleError, match="not before the end"):
        ReductionSchedule.at(10).event_steps(10)
    with pytest.raises(ScheduleError, match="total"):
        ReductionSchedule().event_steps(None)


def test_events_compound_on_the_already_reduced_model():
    """Each event applies τ to the current (reduced) system: the n of an event is the r of the
    previous one, and r is the energy rank of the spectrum the event saw (not the original)."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(layer="lru", d_input=1, d_model=8, state_dims=(40,),
                                  d_output=3, dropout=0.0))
    opt = make_optimizer(model, ["blocks.0.ssm"], OptimConfig())
    x = torch.randn(8, 32, 1)
    tau = 0.15
    reducer = ReductionScheduler(f"hankel-analysis,balanced-truncation{{tau={tau}}},verify",
                                 ReductionSchedule(), x, total_steps=40)
    assert reducer.event_steps == (1, 2, 3, 4)
    dims = [model.state_dims[0]]
    for step in range(1, 6):
        model, opt, event = reducer.step(model, opt, step)
        if event is None:
            assert step not in reducer.event_steps or dims[-1] == model.state_dims[0]
            continue
        (e,) = event.events
        assert e.n == dims[-1]
        hsv = torch.tensor(event.spectra["blocks.0.ssm"], dtype=torch.float64)
        assert e.r == energy_rank(hsv, tau) == model.state_dims[0]
        dims.append(e.r)
    assert len(dims) >= 3 and all(a > b for a, b in zip(dims, dims[1:], strict=False))
    assert [e.n for e in reducer.history][1:] == [e.r for e in reducer.history][:-1]
