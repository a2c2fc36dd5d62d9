"""What a checkpoint captures of the running loop between two steps, and how resume finds it
and puts it back: optimizer state and group layout by parameter name, LR-scheduler position,
data position, RNG states (each DDP rank its own), metrics, run flags and the pending event."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..errors import CheckpointError, SSMCompileError
from ..io import CheckpointMeta
from .checkpoints import RunDirectory
from .data import BatchStream
from .distributed import DistContext
from .pragmatic import PragmaticGuard
from .records import MetricRecord
from .run_state import RunFlags
from .state_io import (
    TrainerState,
    capture_rng,
    group_layout,
    load_rank_rng,
    load_trainer_state,
    optimizer_state_by_name,
    restore_group_layout,
    restore_optimizer_state,
    restore_rng,
)


def load_resume_point(run_dir: RunDirectory, world_size: int, builder: str,
                      load: Callable[[Path], tuple[nn.Module, CheckpointMeta]]
                      ) -> tuple[str, nn.Module, CheckpointMeta, TrainerState] | None:
    """The newest consistent checkpoint of ``run_dir`` (of its ``run_id``): its stem, model
    (rebuilt by ``load``), weights metadata and trainer state; None when the run has none yet
    (killed before its first complete checkpoint); a run of another model ``builder`` cannot
    resume."""
    run_dir.remove_stale_temp_files()
    try:
        stem = run_dir.resume_stem(world_size)
    except CheckpointError:
        return None
    model, meta = load(run_dir.weights(stem))
    if meta.builder != builder:
        raise SSMCompileError(f"cannot resume: the run's model is {meta.builder!r}, this "
                              f"run's is {builder!r}")
    return stem, model, meta, load_trainer_state(run_dir.state(stem))


def capture_state(step: int, checkpoint_id: str, model: nn.Module, optimizer: Optimizer,
                  scheduler: LRScheduler, stream: BatchStream, metrics: list[MetricRecord],
                  flags: RunFlags, guard: PragmaticGuard, threads: int,
                  window: list[tuple[float, float]]) -> TrainerState:
    data_pos, perm = stream.state()
    return TrainerState(
        step=step, checkpoint_id=checkpoint_id,
        optimizer=optimizer_state_by_name(optimizer, model),
        groups=group_layout(optimizer, model),
        scheduler={k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        data=data_pos, perm=perm, rng=capture_rng(), metrics=list(metrics),
        flags=RunFlags(**flags.to_dict()), pending=guard.pending, threads=threads,
        window=list(window))


def restore_state(saved: TrainerState, model: nn.Module, optimizer: Optimizer,
                  scheduler: LRScheduler, stream: BatchStream, guard: PragmaticGuard,
                  ctx: DistContext, run_dir: RunDirectory, stem: str, threads: int) -> None:
    """Everything but the step, flags and metrics (the caller keeps those) back in place; the
    RNG is rank 0's from the state file, every other rank's from its own file."""
    restore_group_layout(optimizer, model, saved.groups)
    restore_optimizer_state(optimizer, model, saved.optimizer)
    # the multiplier is a function of (step, config.steps); only the position is restored
    scheduler.load_state_dict(
        {**saved.scheduler, "lr_lambdas": [None] * len(optimizer.param_groups)})
    stream.restore(saved.data, saved.perm)
    if saved.threads != threads:
        warnings.warn(f"resuming with {threads} thread(s), the run used {saved.threads}: CPU "
                      "results may differ in the last bits", stacklevel=4)
    if ctx.rank == 0:
        restore_rng(*saved.rng)
    else:
        restore_rng(*load_rank_rng(run_dir.rank_rng(stem, ctx.rank), saved.checkpoint_id))
    guard.restore(saved.pending, ctx.device)


__all__ = ["load_resume_point", "capture_state", "restore_state"]
