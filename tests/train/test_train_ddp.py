"""Two processes under torchrun (gloo, CPU) train through a reduction event in lock-step and end
with identical weights on both ranks; only rank 0 writes the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ssmcompile.io import load_checkpoint, load_tensors

DRIVER = textwrap.dedent("""
    import json, os, sys
    from ssmcompile.io import save_tensors_atomic
    from ssmcompile.train.config import DataConfig, ModelConfig, TrainConfig
    from ssmcompile.train.schedule import ReductionSchedule
    from ssmcompile.train.trainer import Trainer
    out = sys.argv[1]
    cfg = TrainConfig(
        model=ModelConfig(d_model=16, state_dim=24, dropout=0.1), data=DataConfig(batch_size=32),
        steps=12, eval_every=6, log_every=3, checkpoint_every=6, probe_size=16, progress=False,
        schedule=ReductionSchedule.at(5, 8), out_dir=os.path.join(out, "run"),
        pipeline="hankel-analysis,balanced-truncation{fraction=0.75},verify")
    result = Trainer(cfg).fit()
    rank = os.environ["RANK"]
    save_tensors_atomic(os.path.join(out, f"rank{rank}.safetensors"), result.model.state_dict(),
                        {"dims": json.dumps(result.dims_final),
                         "history": json.dumps([e.to_dict() for e in result.history])})
""")


@pytest.mark.slow
def test_two_process_ddp_reduces_in_lock_step(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(tmp_path / "driver.py"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (w0, m0), (w1, m1) = (load_tensors(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert json.loads(m0["dims"]) == json.loads(m1["dims"]) == [14]  # 24 → 18 → 14
    assert m0["history"] == m1["history"] and len(json.loads(m0["history"])) == 2
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    model, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")  # written by rank 0
    assert meta.extra["world_size"] == "2" and meta.extra["step"] == "12"
    for key, value in model.state_dict().items():
        assert torch.equal(value, w0[key]), key
    assert (tmp_path / "run" / "metrics.jsonl").exists()
