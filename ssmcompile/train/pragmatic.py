"""Pragmatic mode: keep the model from before a reduction event, and give it back if the event
cost validation accuracy.

Just before an event the trainer measures validation accuracy (the *baseline*) and hands the
model, its reduction history and its optimizer state (by parameter name) to ``keep``: they are
held in memory and, when the run has a directory, in ``DIR/pragmatic-STEP.*`` so that a resumed run
can still roll back. At the next evaluation ``judge`` says whether accuracy fell by more than
``tolerance`` below the baseline; the trainer then rolls back (and stops reducing) or settles.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io import CheckpointMeta, ReductionEvent, load_checkpoint
from .checkpoints import RunDirectory
from .config import PragmaticConfig
from .run_state import PendingEvent
from .state_io import OptimState


@dataclass
class Snapshot:
    """The pre-event model (a copy), its reduction history and optimizer state by name."""

    model: nn.Module
    history: list[ReductionEvent]
    optim: OptimState


class PragmaticGuard:
    """Holds at most one pending event (``pending``), which the trainer stores in its state
    file and hands back to ``restore``; ``load`` rebuilds a checkpoint of the run's model."""

    def __init__(self, config: PragmaticConfig, run_dir: RunDirectory | None, writes: bool,
                 load: Callable[[Path], tuple[nn.Module, CheckpointMeta]] = load_checkpoint):
        self.config, self.run_dir, self.writes, self.load = config, run_dir, writes, load
        self.pending: PendingEvent | None = None
        self.snapshot: Snapshot | None = None

    def restore(self, pending: PendingEvent | None, device: torch.device) -> None:
        """After a resume: reload the snapshot a pending event left on disk."""
        self.pending = pending
        if pending is not None and self.run_dir is not None:
            model, meta = self.load(self.run_dir.snapshot_weights(pending.step))
            self.snapshot = Snapshot(model.to(device).train(), list(meta.history),
                                     self.run_dir.snapshot_optimizer(pending.step))

    def keep(self, step: int, baseline: float, model: nn.Module, history: list[ReductionEvent],
             optim: OptimState, spec: dict, initial_spec: dict) -> None:
        self.snapshot = Snapshot(copy.deepcopy(model), list(history), optim)
        self.pending = PendingEvent(step, baseline)
        if self.run_dir is not None and self.writes:
            self.run_dir.save_snapshot(model, optim, spec=spec,
                                       initial_spec=initial_spec, history=history, step=step)

    def judge(self, val_acc: float) -> bool | None:
        """None: nothing pending; True: roll back; False: the event is accepted."""
        if self.pending is None:
            return None
        return val_acc < self.pending.baseline - self.config.tolerance

    def settle(self) -> None:
        """Forget the pending event and its snapshot (accepted, rolled back or a no-op). Its
        files stay until the next checkpoint, which no longer refers to them, is complete
        (``RunDirectory.save_step``): until then a resume still needs them."""
        self.pending, self.snapshot = None, None


__all__ = ["PragmaticGuard", "Snapshot"]
