"""Two processes under torchrun (gloo, CPU) train through two reduction events in lock-step and end
with identical weights on both ranks; only rank 0 writes the run directory. Killed (rank 1,
SIGKILL) and resumed, the job ends bit-identical to the uninterrupted one on both ranks, RNG
included (each rank restores its own).

Two launches: the first trains the uninterrupted reference and then, in the same processes, the
run that is killed; the second resumes it. ``--standalone`` lets the OS pick the rendezvous port
and the workers share the agent's store, so no fixed port can be taken by another job. Each
rank's output goes to its own log file, shown when a launch does not end as expected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ssmcompile.io import load_checkpoint, load_tensors
from ssmcompile.train.state_io import load_trainer_state

KILL_STEP = 9  # after the event at 7 and its checkpoint: the resume starts from step 7

DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    import torch.distributed as dist
    from ssmcompile.io import save_tensors_atomic
    from ssmcompile.train.config import DataConfig, ModelConfig, TrainConfig
    from ssmcompile.train.schedule import ReductionSchedule
    from ssmcompile.train.trainer import Trainer
    out, phase, kill = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank = os.environ["RANK"]
    def config(name):
        return TrainConfig(
            model=ModelConfig(d_model=8, state_dim=16, dropout=0.1),
            data=DataConfig(batch_size=16), steps=10, eval_every=5, log_every=5,
            checkpoint_every=5, probe_size=8, progress=False,
            schedule=ReductionSchedule.at(4, 7), out_dir=os.path.join(out, name),
            pipeline="hankel-analysis,balanced-truncation{fraction=0.75}")
    def fit(name, **options):
        result = Trainer(config(name), **options).fit()
        tensors = {**result.model.state_dict(), "rng/torch": torch.get_rng_state()}
        save_tensors_atomic(os.path.join(out, f"{name}.rank{rank}.safetensors"), tensors,
                            {"dims": json.dumps(result.dims_final),
                             "history": json.dumps([e.to_dict() for e in result.history])})
    def die(trainer, step):
        if step == kill and rank == "1":
            os.kill(os.getpid(), signal.SIGKILL)
    dist.init_process_group("gloo")  # ours: both runs of a launch share it
    if phase == "first":
        fit("ref")
        fit("chain", callbacks=[die])  # never returns on rank 1
    else:
        fit("chain", resume=True)
""")


def torchrun(out: Path, phase: str, kill: int = 0) -> tuple[int, str]:
    """Run the driver on 2 ranks; (torchrun's exit code, every rank's stderr for messages)."""
    (out / "driver.py").write_text(DRIVER)
    logs = out / f"logs-{phase}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "--log-dir", str(logs), "--redirects", "3", str(out / "driver.py"), str(out), phase,
         str(kill)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # a hung rank must not outlive the test
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    ranks = "".join(f"\n--- {p.relative_to(logs)}\n{p.read_text()[-3000:]}"
                    for p in sorted(logs.rglob("stderr.log")))
    return proc.returncode, f"torchrun exit {proc.returncode}{ranks}\n{err[-1500:]}"


@pytest.mark.slow
def test_two_process_ddp_reduces_in_lock_step_and_resumes_bit_exact(tmp_path):
    rc, log = torchrun(tmp_path, "first", kill=KILL_STEP)
    assert rc != 0 and (tmp_path / "ref.rank1.safetensors").exists(), log
    # the kill, not a crash, ended the launch: the run got to its post-event checkpoint
    assert not (tmp_path / "chain.rank0.safetensors").exists(), log
    assert load_trainer_state(tmp_path / "chain" / "last.state.safetensors").step == 7, log

    (w0, m0), (w1, m1) = (load_tensors(tmp_path / f"ref.rank{r}.safetensors") for r in (0, 1))
    assert json.loads(m0["dims"]) == json.loads(m1["dims"]) == [9]  # 16 → 12 → 9
    assert m0["history"] == m1["history"] and len(json.loads(m0["history"])) == 2
    assert w0.keys() == w1.keys()
    for key in w0.keys() - {"rng/torch"}:
        assert torch.equal(w0[key], w1[key]), key
    assert not torch.equal(w0["rng/torch"], w1["rng/torch"])  # each rank its own dropout stream
    model, meta = load_checkpoint(tmp_path / "ref" / "last.safetensors")  # written by rank 0
    assert meta.extra["world_size"] == "2" and meta.extra["step"] == "10"
    for key, value in model.state_dict().items():
        assert torch.equal(value, w0[key]), key
    assert (tmp_path / "ref" / "metrics.jsonl").exists()
    assert not list((tmp_path / "ref").glob("*.rank0.*"))  # rank 0's RNG is in the state file

    rc, log = torchrun(tmp_path, "resume")
    assert rc == 0, log
    for r in (0, 1):
        want, _ = load_tensors(tmp_path / f"ref.rank{r}.safetensors")
        got, _ = load_tensors(tmp_path / f"chain.rank{r}.safetensors")
        assert want.keys() == got.keys()
        for key in want:  # weights and that rank's final RNG state
            assert torch.equal(want[key], got[key]), (r, key)
