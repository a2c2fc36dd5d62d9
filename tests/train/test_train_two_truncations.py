"""A pipeline that truncates a block twice per event, through the Trainer: the history records
n before the pipeline → final r with the summed bound, checkpoints replay it, and a killed run
resumes to the same weights and history."""

from __future__ import annotations

import signal

import pytest
import torch
from test_train_resume import run_driver

from ssmcompile.io import load_checkpoint
from ssmcompile.train.config import load_config
from ssmcompile.train.trainer import Trainer

CONFIG = """
steps = 14
seed = 5
eval_every = 7
log_every = 7
checkpoint_every = 3
probe_size = 8
progress = false
pipeline = "hankel-analysis,balanced-truncation{rank=16},balanced-truncation{rank=10},verify"
[model]
d_model = 8
state_dim = 24
[data]
batch_size = 16
[schedule]
steps = [4]
"""


@pytest.mark.slow
def test_two_truncation_pipeline_trains_checkpoints_resumes_and_reloads(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    config = load_config(tmp_path / "run.toml")
    straight = Trainer(config.replace(out_dir=str(tmp_path / "straight"))).fit()
    (event,) = straight.history
    assert (event.step, event.block, event.n, event.r) == (4, "blocks.0.ssm", 24, 10)
    assert straight.dims_final == (10,)
    # a checkpoint after the event loads at the reduced size, its history replayed
    model, meta = load_checkpoint(tmp_path / "straight" / "step-00000012.safetensors")
    assert model.state_dims == (10,) and meta.history == straight.history
    assert meta.initial_spec["state_dims"] == [24]

    chain = tmp_path / "chain"
    assert run_driver(tmp_path, chain, False, KILL_STEP="5") == -signal.SIGKILL
    assert run_driver(tmp_path, chain, True) == 0
    a, meta_a = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b, meta_b = load_checkpoint(chain / "last.safetensors")
    assert meta_a.history == meta_b.history == straight.history
    assert b.state_dims == (10,)
    for key, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[key]), key
