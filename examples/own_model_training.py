"""Bring your own model to the resumable trainer: train, shrink, get killed, resume, reload.

The model is defined here only (``TinyClassifier``, the user's container around ssmcompile LRU
layers) and trained on plain tensors. The trainer reduces its blocks at two events; a child
process running the same training is SIGKILLed mid-run, the run resumes bit-exactly from its
directory, and the final checkpoint reloads at the reduced size onto a fresh
``TinyClassifier()`` with ``load_checkpoint(path, model=...)`` — no pickled code anywhere.

    python examples/own_model_training.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from ssmcompile.io import load_checkpoint
from ssmcompile.layers import LRU
from ssmcompile.train import DataConfig, ReductionSchedule, TrainConfig, Trainer, user_task_data
from ssmcompile.train.data import load_digits_task

KILL_AT = 9


class TinyClassifier(nn.Module):
    """(batch, L, 1) → (batch, 10): linear encoder, LRU mixers with residuals, mean-pool."""

    def __init__(self, width: int = 16, state_dim: int = 24, depth: int = 2):
        super().__init__()
        self.encode = nn.Linear(1, width)
        self.ssms = nn.ModuleList(LRU(width, state_dim) for _ in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        for ssm, norm in zip(self.ssms, self.norms, strict=True):
            h = h + nn.functional.gelu(ssm(norm(h)))
        return self.head(h.mean(1))


def run(out: Path, *, resume: bool, kill_at: int | None = None):
    digits = load_digits_task()  # bundled with scikit-learn; stands in for your tensors
    data = user_task_data((digits.train.x[:512], digits.train.y[:512]),
                          (digits.val.x, digits.val.y), (digits.test.x, digits.test.y))
    config = TrainConfig(
        data=DataConfig(batch_size=32), steps=20, eval_every=10, log_every=5,
        checkpoint_every=4, probe_size=16, progress=False, schedule=ReductionSchedule.at(4, 8),
        pipeline="hankel-analysis,balanced-truncation{fraction=0.7},verify", out_dir=str(out))

    def die(trainer, step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return Trainer(config, model=TinyClassifier, data=data, task="classify", resume=resume,
                   callbacks=[die]).fit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="own-model-"))
    if args.child:  # the run that gets killed
        run(out, resume=False, kill_at=KILL_AT)
        return
    child = subprocess.run([sys.executable, __file__, "--child", "--out", str(out)])
    print(f"training process killed at step {KILL_AT}: exit {child.returncode}")
    result = run(out, resume=True)
    print(f"resumed and finished: state dims {result.dims_initial} → {result.dims_final}, "
          f"test accuracy {result.test_acc:.3f}")
    reloaded, meta = load_checkpoint(out / "last.safetensors", model=TinyClassifier())
    x = load_digits_task().test.x[:32]
    same = torch.equal(reloaded(x), result.model.eval()(x))
    dims = tuple(ssm.state_dim for ssm in reloaded.ssms)
    print(f"reloaded onto a fresh TinyClassifier: state dims {dims}, "
          f"{len(meta.history)} reduction events, identical outputs: {same}")
    if child.returncode != -signal.SIGKILL or not same or dims != result.dims_final:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
