"""A model the trainer did not build (the user's own container of LRU mixers, on the user's own
tensors) trains through reduction events, resumes bit-exactly after SIGKILL at several points,
and its reduced checkpoint reloads onto a fresh instance with ``load_checkpoint(path, model=)``;
a model the history does not fit is a one-line error naming the block."""

from __future__ import annotations

import signal

import pytest
import torch
from kill_resume import assert_same_final_state, last_step, run_driver
from user_models import BLOCKS, LRUMixer, PixelNet, digits_data, make_model, trainer_options

from ssmcompile.errors import CheckpointError
from ssmcompile.io import load_checkpoint, module_builder, register_builder
from ssmcompile.train.config import load_config
from ssmcompile.train.records import EvalRecord, of_kind
from ssmcompile.train.schedule import ReductionSchedule
from ssmcompile.train.trainer import Trainer

CONFIG = """
steps = 24
seed = 5
eval_every = 8
log_every = 4
checkpoint_every = 4
probe_size = 16
progress = false
pipeline = "hankel-analysis,balanced-truncation{fraction=0.75},verify"
[data]
batch_size = 32
[schedule]
steps = [5, 10]
[pragmatic]
enabled = true
tolerance = 1.0
"""


def test_user_model_trains_with_events_and_reloads_at_reduced_size(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    register_builder("pixel-net-test", module_builder(make_model))
    user = make_model()
    before = {k: v.clone() for k, v in user.state_dict().items()}
    config = load_config(tmp_path / "run.toml").replace(out_dir=str(tmp_path / "run"))
    result = Trainer(config, model=user, data=digits_data(), builder="pixel-net-test").fit()

    assert [(e.step, e.block) for e in result.history] == [(5, b) for b in BLOCKS] + [
        (10, b) for b in BLOCKS]
    assert result.dims_initial == (20, 16) and result.dims_final == (12, 9)
    assert isinstance(result.model, PixelNet) and isinstance(result.model.mixers[0], LRUMixer)
    assert of_kind(result.metrics, EvalRecord)[-1].dims == (12, 9)
    # the user's instance was only copied
    assert all(torch.equal(before[k], v) for k, v in user.state_dict().items())
    assert user.mixers[0].state_dim == 20

    x = digits_data().val.x[:16]
    want = result.model.eval()(x)
    for loaded, meta in (load_checkpoint(tmp_path / "run" / "last.safetensors", model=PixelNet()),
                         load_checkpoint(tmp_path / "run" / "last.safetensors")):  # registered
        assert meta.builder == "pixel-net-test" and meta.spec == {
            "blocks": {"mixers.0": 12, "mixers.1": 9}}
        assert torch.equal(loaded(x), want)

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "run" / "last.safetensors", model=PixelNet(state_dims=(20, 12)))
    assert "'mixers.1'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=r"no block 'mixers\.1'"):
        load_checkpoint(tmp_path / "run" / "last.safetensors", model=PixelNet(state_dims=(20,)))


def test_user_model_checkpoint_needs_the_model_to_load(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    config = load_config(tmp_path / "run.toml").replace(
        out_dir=str(tmp_path / "run"), steps=8, schedule=ReductionSchedule.at(5))
    Trainer(config, model=make_model, data=digits_data()).fit()
    with pytest.raises(CheckpointError, match=r"user model.*model="):
        load_checkpoint(tmp_path / "run" / "last.safetensors")
    model, meta = load_checkpoint(tmp_path / "run" / "last.safetensors", model=make_model)
    assert meta.builder == "user-model" and model.mixers[0].state_dim == 15


@pytest.mark.slow
def test_user_model_kill_and_resume_is_bit_exact(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    straight, chain = tmp_path / "straight", tmp_path / "chain"
    options = "user_models:trainer_options"
    config = load_config(tmp_path / "run.toml")
    Trainer(config.replace(out_dir=str(straight)), **trainer_options()).fit()
    # 1. mid-checkpoint-write: die renaming the post-event (step 5) weights into place
    assert run_driver(tmp_path, chain, False, options,
                      KILL_WRITE="step-00000005.safetensors:1") == -signal.SIGKILL
    assert last_step(chain) == 4
    # 2. right after the event at 10 (its checkpoint is complete; pragmatic event pending,
    #    so resume must rebuild the pre-event snapshot onto a fresh user model)
    assert run_driver(tmp_path, chain, True, options, KILL_STEP="11") == -signal.SIGKILL
    assert last_step(chain) == 10
    # 3. mid-step between checkpoints, then finish
    assert run_driver(tmp_path, chain, True, options, KILL_STEP="19") == -signal.SIGKILL
    assert last_step(chain) == 16
    Trainer(config.replace(out_dir=str(chain)), resume=True, **trainer_options()).fit()
    assert_same_final_state(straight, chain, model=make_model)
