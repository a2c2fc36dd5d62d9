"""Train state-space models and shrink them while they train (the CompreSSM schedule).

``train(TrainConfig(...)) -> TrainResult`` / ``Trainer(config, pipeline=...).fit()`` for the
built-in loop (resumable, DDP, optional torch.compile); ``ReductionScheduler`` for your own
loop. Heavy modules load lazily, so ``import ssmcompile.train`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ModelConfig": "config", "DataConfig": "config",
    "OptimConfig": "config", "PragmaticConfig": "config", "ConfigError": "config",
    "PRESETS": "presets", "get_preset": "presets", "load_config": "config",
    "default_pipeline": "config",
    "ReductionSchedule": "schedule", "ScheduleError": "schedule",
    "ReductionScheduler": "reducer", "AppliedReduction": "reducer", "reduce_model": "reducer",
    "swap_parameters": "optim_surgery", "SwapSummary": "optim_surgery",
    "Trainer": "trainer", "TrainResult": "trainer", "train": "trainer",
    "Task": "task", "user_task_data": "user_data",
    "load_task": "data", "TaskData": "data", "read_idx": "data", "DataError": "data",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssmcompile.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = sorted(_EXPORTS)
