"""What the run-identity, train-CLI and kill/resume tests share: a tiny training config, a
finished run to copy, directory snapshots and the one-line error check."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ssmcompile.train.config import DataConfig, ModelConfig, TrainConfig
from ssmcompile.train.schedule import ReductionSchedule

# One LRU block, H = 8, n = 8, events at 2 and 5: a few seconds cold, well under one warm.
TINY_TOML = """
steps = 6
seed = 1
eval_every = 3
log_every = 2
checkpoint_every = 2
probe_size = 8
progress = false
scan_threads = 1
pipeline = "hankel-analysis,balanced-truncation{fraction=0.75}"
[model]
d_model = 8
state_dim = 8
[data]
batch_size = 16
[schedule]
steps = [2, 5]
"""


def tiny_config(out: Path | None = None, **changes) -> TrainConfig:
    """``TINY_TOML`` as a TrainConfig (``changes``: top-level fields)."""
    cfg = TrainConfig(model=ModelConfig(d_model=8, state_dim=8), data=DataConfig(batch_size=16),
                      steps=6, seed=1, eval_every=3, log_every=2, checkpoint_every=2,
                      probe_size=8, progress=False, scan_threads=1,
                      schedule=ReductionSchedule.at(2, 5),
                      pipeline="hankel-analysis,balanced-truncation{fraction=0.75}")
    if out is not None:
        changes["out_dir"] = str(out)
    return cfg.replace(**changes)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden files included) → content hash, or "dir"."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def error_line(code: int, out: str, err: str) -> str:
    """The single ``ssmcompile: error:`` line of a failed command (asserting there is one)."""
    assert code != 0, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = [line for line in err.splitlines() if line.startswith("ssmcompile: error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    return lines[0]
