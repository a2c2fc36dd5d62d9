"""Kill -9 a training run at several points — mid-step, right after a reduction event, and in
the middle of checkpoint writes — resume each time, and finish: the weights, optimizer state and
reduction history must equal those of an uninterrupted run, bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ssmcompile.io import load_checkpoint, load_tensors, read_checkpoint_meta
from ssmcompile.train.config import load_config
from ssmcompile.train.state_io import load_trainer_state
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

# Runs the trainer; KILL_STEP sends SIGKILL to itself after that optimizer step, KILL_WRITE
# ("NAME:K") on the K-th atomic rename onto NAME — after the temp file is written and fsynced,
# before os.replace: the worst moment for a checkpoint writer to die.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    kill_write = os.environ.get("KILL_WRITE")
    if kill_write:
        target, count = kill_write.rsplit(":", 1)
        real_replace, seen = os.replace, [0]
        def replace(src, dst, *args, **kwargs):
            if os.path.basename(str(dst)) == target:
                seen[0] += 1
                if seen[0] == int(count):
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *args, **kwargs)
        os.replace = replace
    from ssmcompile.train.config import load_config
    from ssmcompile.train.trainer import Trainer
    kill_step = int(os.environ.get("KILL_STEP", "0"))
    def maybe_die(trainer, step):
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
    config = load_config(sys.argv[1]).replace(out_dir=sys.argv[2])
    Trainer(config, resume=sys.argv[3] == "resume", callbacks=[maybe_die]).fit()
""")


def run_driver(tmp_path: Path, out: Path, resume: bool, **env: str) -> int:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    full_env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, str(driver), str(tmp_path / "run.toml"), str(out),
                           "resume" if resume else "fresh"], env=full_env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def last_step(out: Path) -> int:
    return load_trainer_state(out / "last.state.safetensors").step


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
    assert last_step(chain_dir) == 5 and list(chain_dir.glob(".step-00000006.safetensors.*.tmp"))
    # 2. die on the first step after the event at 12 (its checkpoint is complete)
    assert run_driver(tmp_path, chain_dir, True, KILL_STEP="13") == -signal.SIGKILL
    assert last_step(chain_dir) == 12
    assert not list(chain_dir.glob(".*.tmp"))  # resume cleaned the stale temp file
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

    a, meta_a = load_checkpoint(straight_dir / "last.safetensors")
    b, meta_b = load_checkpoint(chain_dir / "last.safetensors")
    assert meta_a.history == meta_b.history and len(meta_b.history) == 3
    assert meta_b.spec == meta_a.spec and meta_b.extra["step"] == "40"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    ta, _ = load_tensors(straight_dir / "last.state.safetensors")
    tb, _ = load_tensors(chain_dir / "last.state.safetensors")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key  # optimizer moments, RNG, data permutation
