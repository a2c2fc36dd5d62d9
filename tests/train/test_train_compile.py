"""torch.compile across reductions: after 10 reductions every training step still runs through
a compiled graph — no silent eager fallback past dynamo's recompile limit."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from ssmcompile.train.compile import should_compile
from ssmcompile.train.config import DataConfig, ModelConfig, TrainConfig
from ssmcompile.train.schedule import ReductionSchedule
from ssmcompile.train.trainer import Trainer

COMPILED: list[tuple[tuple[int, ...], ...]] = []  # input shapes of each compiled graph
RUNS: list[int] = []  # executions of each compiled graph


@torch._dynamo.register_backend
def ssm_counting_backend(gm, example_inputs):
    """Records each compilation, then runs the captured graph eagerly (cheap, deterministic)."""
    index = len(COMPILED)
    COMPILED.append(tuple(tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)))
    RUNS.append(0)

    def run(*args):
        RUNS[index] += 1
        return gm.forward(*args)
    return run


def test_auto_compiles_on_cuda_only():
    assert should_compile("auto", torch.device("cuda", 0))
    assert not should_compile("auto", torch.device("cpu"))
    assert should_compile("on", torch.device("cpu"))
    assert not should_compile("off", torch.device("cuda"))


@pytest.mark.slow
def test_ten_reductions_stay_compiled(monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    COMPILED.clear()
    RUNS.clear()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    per_step: list[tuple[int, int]] = []

    def record(trainer, step):
        per_step.append((len(COMPILED), sum(RUNS)))

    cfg = TrainConfig(
        model=ModelConfig(d_model=8, state_dim=64, dropout=0.0), data=DataConfig(batch_size=16),
        steps=23, eval_every=100, log_every=100, checkpoint_every=100, probe_size=8,
        progress=False, compile="on", compile_backend="ssm_counting_backend",
        schedule=ReductionSchedule(every=2, end=0.9),
        pipeline="hankel-analysis,balanced-truncation{fraction=0.9}")
    result = Trainer(cfg, callbacks=[record]).fit()
    events = sorted({e.step for e in result.history})
    assert events == list(range(2, 21, 2)) and len(events) == 10
    assert result.dims_final == (25,)  # 64 → 58 → 53 → … → 27 → 25
    assert not torch._dynamo.utils.counters["graph_break"]  # whole model, one graph
    # one compilation per model size: the initial one and one after each of the 10 swaps
    assert len(COMPILED) == 11
    # every step ran exactly one compiled graph — including every step after the 10th event
    runs = [r for _, r in per_step]
    assert runs == list(range(1, 24))
    # and the graph that ran after each event was compiled for the new state size
    compiles = [c for c, _ in per_step]
    assert compiles[0] == 1 and compiles[-1] == 11
    for step in events:
        assert compiles[step] == compiles[step - 1] + 1  # the step after the event recompiled
    assert all(RUNS), RUNS
    torch._dynamo.reset()
