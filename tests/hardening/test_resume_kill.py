"""Kill -9 a tiny training run 20 times, at seeded and distinct points — between optimizer steps
(before that step's log, evaluation, event and checkpoint) and between writing a file's temp
copy and renaming it into place, before the first checkpoint and after the last — and resume
it after each kill: the finished run must equal an uninterrupted one bit for bit: weights,
optimizer moments, RNG and data state, the best checkpoint, and every metrics record (in the
log and in the trainer state) except the wall-clock fields.

The kills are real SIGKILLs of forked children: a fork starts in milliseconds with torch,
numba's compiled kernels and matplotlib already loaded, where a fresh interpreter took ~8 s
(20 of them would not fit the suite's budget). The children run the scans on one thread, so
no helper thread of the parent is needed across the fork.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback
from pathlib import Path

import torch
from train_run_helpers import tiny_config

from ssmcompile.io import load_checkpoint, load_tensors
from ssmcompile.io.tensorfile import read_metadata
from ssmcompile.train.config import PragmaticConfig
from ssmcompile.train.metrics import read_jsonl
from ssmcompile.train.schedule import ReductionSchedule
from ssmcompile.train.state_io import load_trainer_state
from ssmcompile.train.trainer import Trainer

KILLS = 20
STEPS = 30
WALL_CLOCK = {"steps_per_s", "seconds"}  # the only fields two identical runs may differ in


def config(out: Path):
    # checkpoints every 3 steps, logs every 2: a checkpoint often falls inside a log window,
    # so the first record after a resume must average steps from before the kill
    return tiny_config(out, steps=STEPS, log_every=2, checkpoint_every=3, eval_every=4,
                       schedule=ReductionSchedule.at(4, 9, 13),
                       pragmatic=PragmaticConfig(enabled=True, tolerance=1.0))


def child(out: Path, resume: bool, kind: str, value: int) -> None:
    """In the forked child: train, and SIGKILL this process at the chosen point."""
    if kind == "step":
        def die(trainer, step):
            if step == value:
                os.kill(os.getpid(), signal.SIGKILL)
        callbacks = [die]
    else:  # the value-th rename of this process: temp file written and fsynced, not renamed
        callbacks, real_replace, seen = [], os.replace, [0]

        def replace(src, dst, *args, **kwargs):
            seen[0] += 1
            if seen[0] == value:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    Trainer(config(out), resume=resume, callbacks=callbacks).fit()


def run_forked(out: Path, resume: bool, kind: str, value: int, timeout: float = 120) -> int:
    """0 when the child finished, -9 when it was killed; AssertionError on anything else."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            child(out, resume, kind, value)
            code = 0
        except BaseException:  # noqa: BLE001 - report, then leave without running pytest's code
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child ({kind} {value}) hung")
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    assert code == 0, f"child ({kind} {value}, resume={resume}) failed with {code}"
    return 0


def resume_step(out: Path) -> int:
    """Where the next process starts: the newest consistent checkpoint's step, else 0."""
    from ssmcompile.train.checkpoints import RunDirectory

    if not out.is_dir():
        return 0
    try:
        stem = RunDirectory(out).resume_stem()
    except Exception:  # noqa: BLE001 - no complete checkpoint yet
        return 0
    return load_trainer_state(out / f"{stem}.state.safetensors").step


def kill_chain(out: Path, seed: int) -> list[tuple[int, str, int]]:
    """Kill the run ``KILLS`` times, then let it finish; the (start step, kind, value) of each
    kill. The points are drawn from ``seed`` within reach of where each process starts, so
    every kill lands; none repeats (same start, same point)."""
    rng, plan = random.Random(seed), []
    first = [("write", 1), ("step", 2)]  # before run.json lands; before any checkpoint
    while len(plan) < KILLS:
        start = resume_step(out)
        assert start < STEPS, plan  # the run must not finish before the last kill
        for _ in range(100):
            kind, value = first.pop(0) if first else (
                ("step", min(start + rng.randint(1, 3), STEPS)) if rng.random() < 0.5
                else ("write", rng.randint(1, 8)))
            if (start, kind, value) not in plan:
                break
        plan.append((start, kind, value))
        # a start killed before run.json was written left no run: it is started again
        resume = (out / "run.json").exists()
        assert run_forked(out, resume, kind, value) == -signal.SIGKILL, plan
    assert run_forked(out, (out / "run.json").exists(), "step", 0) == 0, plan
    return plan


def state_body(path: Path) -> dict:
    body = json.loads(read_metadata(path)["state"])
    body["flags"].pop("run_id")
    body.pop("checkpoint_id")
    body["metrics"] = [without_clock(r) for r in body["metrics"]]
    return body


def without_clock(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WALL_CLOCK}


def assert_equal_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (what, key)


def test_twenty_kills_resume_bit_exact(tmp_path):
    straight, chain = tmp_path / "straight", tmp_path / "chain"
    result = Trainer(config(straight)).fit()
    assert [e.step for e in result.history] == [4, 9, 13] and result.steps == STEPS

    plan = kill_chain(chain, seed=2026)
    assert len(plan) == KILLS and len(set(plan)) == KILLS
    assert {kind for _, kind, _ in plan} == {"step", "write"}
    assert max(start for start, _, _ in plan) >= 15, plan  # kills late in the run, too

    for name in ("last", "best"):
        a, meta_a = load_checkpoint(straight / f"{name}.safetensors")
        b, meta_b = load_checkpoint(chain / f"{name}.safetensors")
        assert meta_a.history == meta_b.history and meta_a.spec == meta_b.spec, (name, plan)
        assert meta_a.extra["step"] == meta_b.extra["step"], (name, plan)
        assert_equal_tensors(a.state_dict(), b.state_dict(), name)
    assert_equal_tensors(load_tensors(straight / "last.state.safetensors")[0],
                         load_tensors(chain / "last.state.safetensors")[0], "state")
    assert state_body(straight / "last.state.safetensors") == state_body(
        chain / "last.state.safetensors"), plan

    log_a = [without_clock(r) for r in read_jsonl(straight / "metrics.jsonl")]
    log_b = [without_clock(r) for r in read_jsonl(chain / "metrics.jsonl")]
    assert log_a == log_b, plan
    train_steps = [r["step"] for r in log_a if r["kind"] == "train"]
    assert train_steps == list(range(2, STEPS + 1, 2))
    assert not [p.name for p in chain.iterdir() if p.name.endswith(".ssmcompile-tmp")]
    assert json.loads((chain / "run.json").read_text())["config"]["steps"] == STEPS
