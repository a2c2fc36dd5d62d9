"""Kill -9 a training run at several points — mid-step, right after a reduction event, and in
the middle of checkpoint writes — resume each time, and finish: the weights, optimizer state and
reduction history must equal those of an uninterrupted run, bit for bit."""

from __future__ import annotations

import random
import signal

import pytest
from kill_resume import assert_same_final_state, last_step, run_driver

from ssmcompile.io import load_checkpoint, read_checkpoint_meta
from ssmcompile.train.config import load_config
from ssmcompile.train.trainer import Trainer

CONFIG = """
steps = 40
seed = 3
eval_every = 10
log_every = 5
checkpoint_every = 5
probe_size = 16
progress = false
pipeline = "hankel-analysis,balanced-truncation{fraction=0.8},verify"
[model]
d_model = 16
state_dim = 24
dropout = 0.1
[data]
batch_size = 32
[schedule]
steps = [6, 12, 18]
[pragmatic]
enabled = true
tolerance = 1.0
"""


@pytest.mark.slow
def test_kill_and_resume_is_bit_exact(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    straight_dir, chain_dir = tmp_path / "straight", tmp_path / "chain"
    result = Trainer(load_config(tmp_path / "run.toml").replace(out_dir=str(straight_dir))).fit()
    assert [e.step for e in result.history] == [6, 12, 18]
    assert result.dims_final == (13,)  # 24 → 20 → 16 → 13: fraction 0.8 compounding

    # 1. die while renaming the post-event (step 6) weights into place: the step-6 pair is
    #    incomplete and the temp file is left behind; resume must rerun the event from step 5
    assert run_driver(tmp_path, chain_dir, False,
                      KILL_WRITE="step-00000006.safetensors:1") == -signal.SIGKILL
    assert last_step(chain_dir) == 5
    assert list(chain_dir.glob(".step-00000006.safetensors.*.ssmcompile-tmp"))
    # 2. die on the first step after the event at 12 (its checkpoint is complete)
    assert run_driver(tmp_path, chain_dir, True, KILL_STEP="13") == -signal.SIGKILL
    assert last_step(chain_dir) == 12
    assert not list(chain_dir.glob(".*.ssmcompile-tmp"))  # resume cleaned the stale temp file
    # 3. die at random steps between checkpoints (seeded; printed on failure)
    rng = random.Random(20260)
    kill = rng.choice([s for s in range(19, 25) if s % 5])
    assert run_driver(tmp_path, chain_dir, True, KILL_STEP=str(kill)) == -signal.SIGKILL, kill
    # 4. die renaming the new `last` weights: `last` is a mismatched pair (new trainer state,
    #    old weights), so resume must pick the newest consistent step file instead
    before = last_step(chain_dir)
    assert run_driver(tmp_path, chain_dir, True, KILL_WRITE="last.safetensors:1") == (
        -signal.SIGKILL)
    assert last_step(chain_dir) > before  # the state file was renamed, the weights were not
    assert read_checkpoint_meta(chain_dir / "last.safetensors").extra["step"] == str(before)
    # 5. die once more at a random step, then finish
    kill = rng.choice([s for s in range(last_step(chain_dir) + 1, 40) if s % 5])
    assert run_driver(tmp_path, chain_dir, True, KILL_STEP=str(kill)) == -signal.SIGKILL, kill
    assert run_driver(tmp_path, chain_dir, True) == 0

    assert_same_final_state(straight_dir, chain_dir)
    _, meta = load_checkpoint(chain_dir / "last.safetensors")
    assert len(meta.history) == 3 and meta.extra["step"] == "40"
