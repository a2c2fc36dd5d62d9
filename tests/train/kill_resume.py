"""Kill-and-resume machinery shared by the resume tests: a subprocess driver that SIGKILLs
itself at a chosen step or checkpoint write, and the bit-exact comparison of two run dirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from ssmcompile.io import load_checkpoint, load_tensors
from ssmcompile.train.state_io import load_trainer_state

HERE = Path(__file__).resolve().parent

# Runs the trainer; KILL_STEP sends SIGKILL to itself after that optimizer step, KILL_WRITE
# ("NAME:K") on the K-th atomic rename onto NAME — after the temp file is written and fsynced,
# before os.replace: the worst moment for a checkpoint writer to die. OPTIONS ("module:fn")
# names a function in this directory returning extra Trainer keyword arguments (a user model).
DRIVER = textwrap.dedent("""
    import importlib, os, signal, sys
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
    options = {}
    if os.environ.get("OPTIONS"):
        sys.path.insert(0, os.environ["OPTIONS_DIR"])
        module, fn = os.environ["OPTIONS"].split(":")
        options = getattr(importlib.import_module(module), fn)()
    config = load_config(sys.argv[1]).replace(out_dir=sys.argv[2])
    Trainer(config, resume=sys.argv[3] == "resume", callbacks=[maybe_die], **options).fit()
""")


def run_driver(tmp_path: Path, out: Path, resume: bool, options: str = "", **env: str) -> int:
    """Run the driver on ``tmp_path / "run.toml"``; its return code (0 or -SIGKILL)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    full_env = {**os.environ, "OPTIONS": options, "OPTIONS_DIR": str(HERE), **env}
    proc = subprocess.run([sys.executable, str(driver), str(tmp_path / "run.toml"), str(out),
                           "resume" if resume else "fresh"], env=full_env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def last_step(out: Path) -> int:
    return load_trainer_state(out / "last.state.safetensors").step


def assert_same_final_state(a_dir: Path, b_dir: Path, model=None) -> None:
    """Both runs' ``last`` checkpoints hold equal history and spec, bit-identical weights and
    trainer-state tensors (optimizer moments, RNG, data permutation)."""
    a, meta_a = load_checkpoint(a_dir / "last.safetensors", model=model)
    b, meta_b = load_checkpoint(b_dir / "last.safetensors", model=model)
    assert meta_a.history == meta_b.history and meta_b.spec == meta_a.spec
    assert meta_a.extra["step"] == meta_b.extra["step"]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    ta, _ = load_tensors(a_dir / "last.state.safetensors")
    tb, _ = load_tensors(b_dir / "last.state.safetensors")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
