"""The trainer-state file: pickle-free, exact round trip, checked before it touches anything;
and the character-level LM task trains through events and resumes from its files."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import torch

from ssmcompile.errors import CheckpointError
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.train.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from ssmcompile.train.optim_surgery import make_optimizer
from ssmcompile.train.records import EvalRecord, TrainRecord, of_kind
from ssmcompile.train.run_state import PendingEvent, RunFlags
from ssmcompile.train.schedule import ReductionSchedule
from ssmcompile.train.state_io import (
    TrainerState,
    capture_rng,
    load_trainer_state,
    optimizer_state_by_name,
    restore_optimizer_state,
    restore_rng,
    save_trainer_state,
)
from ssmcompile.train.trainer import Trainer


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist(), random.gauss(0, 1)


def test_rng_round_trip_reproduces_every_stream(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    draws()
    random.gauss(0, 1)  # leaves a cached gauss_next in Python's state
    state = TrainerState(step=7, checkpoint_id="run:7", optimizer={}, groups=[], scheduler={},
                         data={"epoch": 0, "position": 1}, perm=torch.arange(5),
                         rng=capture_rng(), metrics=[EvalRecord(7, 0.5, 0.75, (3, 2))],
                         flags=RunFlags(run_id="run", best_val_acc=0.5),
                         pending=PendingEvent(step=6, baseline=0.25))
    save_trainer_state(tmp_path / "s.safetensors", state)
    expected = draws()
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    loaded = load_trainer_state(tmp_path / "s.safetensors")
    restore_rng(*loaded.rng)
    assert draws() == expected
    assert loaded.step == 7 and loaded.metrics == state.metrics and loaded.flags == state.flags
    assert loaded.pending == state.pending
    assert torch.equal(loaded.perm, state.perm)
    raw = (tmp_path / "s.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])  # plain safetensors: a JSON header and raw arrays
    assert header["__metadata__"]["format"] == "ssmcompile-trainer-state"
    assert b"\x80\x04" not in raw[:8 + n] and b"torch._utils" not in raw  # no pickle anywhere


def test_optimizer_state_by_name_round_trip_and_shape_check(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelSpec(layer="lru", d_input=1, d_model=4, state_dims=(6,),
                                  d_output=2))
    opt = make_optimizer(model, ["blocks.0.ssm"], OptimConfig())
    model(torch.randn(2, 5, 1)).sum().backward()
    opt.step()
    saved = optimizer_state_by_name(opt, model)
    state = TrainerState(step=1, checkpoint_id="x", optimizer=saved, groups=[], scheduler={},
                         data={"epoch": 0, "position": 0}, perm=torch.arange(3),
                         rng=capture_rng())
    save_trainer_state(tmp_path / "s.safetensors", state)
    loaded = load_trainer_state(tmp_path / "s.safetensors").optimizer
    assert loaded.keys() == saved.keys()
    for name, entry in saved.items():
        for key, value in entry.items():
            assert torch.equal(loaded[name][key], value) and loaded[name][key].dtype == value.dtype
    other = build_model(ModelSpec(layer="lru", d_input=1, d_model=4, state_dims=(5,),
                                  d_output=2))
    opt2 = make_optimizer(other, ["blocks.0.ssm"], OptimConfig())
    with pytest.raises(CheckpointError, match="has shape"):
        restore_optimizer_state(opt2, other, loaded)
    assert not opt2.state  # nothing was changed
    with pytest.raises(CheckpointError, match="not an ssmcompile trainer-state"):
        from ssmcompile.io import save_tensors_atomic

        save_tensors_atomic(tmp_path / "w.safetensors", {"a": torch.zeros(1)}, {})
        load_trainer_state(tmp_path / "w.safetensors")


@pytest.mark.slow
def test_character_lm_trains_reduces_and_resumes(tmp_path):
    rng = random.Random(0)
    words = ["state", "space", "model", "hankel", "balanced", "truncation", "of", "a"]
    (tmp_path / "text.txt").write_text(" ".join(rng.choice(words) for _ in range(2000)))

    def config(steps: int) -> TrainConfig:
        return TrainConfig(
            model=ModelConfig(d_model=16, state_dim=12, n_blocks=2),
            data=DataConfig(dataset="text", path=str(tmp_path / "text.txt"), seq_len=32,
                            batch_size=16, val_fraction=0.05, test_fraction=0.05),
            steps=steps, eval_every=5, log_every=5, checkpoint_every=5, probe_size=8,
            progress=False, schedule=ReductionSchedule.at(4, 8), out_dir=str(tmp_path / "run"),
            pipeline="hankel-analysis,balanced-truncation{fraction=0.75},verify")

    full = Trainer(config(12)).fit()
    assert full.dims_initial == (12, 12) and full.dims_final == (7, 7)  # 12 → 9 → 7 per block
    assert full.model.spec.norm == "layer" and full.model.spec.vocab_size is not None
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("step-*")) == [
        "step-00000010.safetensors", "step-00000010.state.safetensors",
        "step-00000012.safetensors", "step-00000012.state.safetensors"]  # keep_last = 2
    for p in [*run.glob("last*"), *run.glob("step-00000012*")]:
        p.unlink()  # resume from the step-10 files: two more steps to train
    again = Trainer(config(12), resume=True).fit()
    assert [r.step for r in of_kind(again.metrics, TrainRecord)][-2:] == [10, 12]
    a, b = full.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
