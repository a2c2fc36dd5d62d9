"""The run directory: checkpoints written atomically, kept last-K and best, found on resume.

Layout of ``DIR``::

    last.safetensors, last.state.safetensors        newest checkpoint (weights, trainer state)
    step-00000120.safetensors, ….state.safetensors   the last ``keep_last`` periodic ones
    step-00000120.rank1.rng.safetensors, …          DDP: each rank > 0's RNG state, same id
    best.safetensors                                 best validation accuracy so far (weights)
    pragmatic-00000080.safetensors, ….state…         pragmatic mode: the model before event 80
    run.json, .ssmcompile-run.lock                   the run's identity and its trainer's lock
    metrics.jsonl, hsv_spectra.png, training.png

Weights go through ``ssmcompile.io.save_checkpoint`` (spec, initial_spec, history, versions)
from the raw module. A weights file and its trainer-state file carry the same checkpoint id; a
crash between the two writes leaves a mismatched pair, which resume skips for an older
consistent one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..errors import CheckpointError
from ..io import ReductionEvent, read_checkpoint_meta, save_checkpoint, save_tensors_atomic
from ..io.atomic import remove_stale_temps
from ..io.tensorfile import load_tensors
from .state_io import (
    OptimState,
    TrainerState,
    read_rank_rng_id,
    read_state_id,
    save_rank_rng,
    save_trainer_state,
)

WEIGHTS, STATE, RNG = ".safetensors", ".state.safetensors", ".rng.safetensors"


class RunDirectory:
    """Checkpoint files of one run in ``root`` (created if missing); weights files name the
    allow-listed model ``builder`` (``ssmcompile.io.register_builder``)."""

    def __init__(self, root: str | os.PathLike[str], keep_last: int = 2,
                 builder: str = "ssm-model", run_id: str | None = None):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise CheckpointError(f"output path is not a directory: {self.root}")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot create the run directory {self.root}: "
                                  f"{err.strerror or err}") from None
        self.keep_last = keep_last
        self.builder = builder
        self.run_id = run_id

    def weights(self, stem: str) -> Path:
        return self.root / (stem + WEIGHTS)

    def state(self, stem: str) -> Path:
        return self.root / (stem + STATE)

    def rank_rng(self, stem: str, rank: int) -> Path:
        return self.root / f"{stem}.rank{rank}{RNG}"

    def save_rank_step(self, step: int, rank: int, checkpoint_id: str) -> None:
        """A rank > 0's RNG files for ``step-NNNNNNNN`` and ``last`` (written by that rank)."""
        for stem in (f"step-{step:08d}", "last"):
            save_rank_rng(self.rank_rng(stem, rank), checkpoint_id)

    def save(self, stem: str, model: nn.Module, *, spec: dict, initial_spec: dict,
             history: Sequence[ReductionEvent], extra: dict[str, str],
             state: TrainerState | None = None) -> None:
        """Trainer state first, then weights; both name ``extra["checkpoint_id"]``."""
        if state is not None:
            save_trainer_state(self.state(stem), state)
        save_checkpoint(self.weights(stem), model, builder=self.builder, spec=spec,
                        initial_spec=initial_spec,
                        history=tuple(history), extra=extra)

    def save_step(self, step: int, model: nn.Module, **kwargs) -> None:
        """``step-NNNNNNNN`` and ``last``, then prune to the newest ``keep_last`` step files."""
        self.save(f"step-{step:08d}", model, **kwargs)
        self.save("last", model, **kwargs)
        # a step file past this step is no checkpoint of this run's past: never prune ours for it
        steps = sorted(p for p in self.root.glob("step-*" + STATE) if _step_of(p) <= step)
        for old in steps[: max(0, len(steps) - self.keep_last)]:
            stem = old.name[: -len(STATE)]
            for path in (self.weights(stem), old, *self.root.glob(f"{stem}.rank*{RNG}")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        state = kwargs.get("state")
        if state is not None:  # this checkpoint is complete: older events' snapshots may go
            self.prune_snapshots(state.pending.step if state.pending is not None else None)

    def consistent(self, stem: str, world_size: int = 1) -> int | None:
        """The step of checkpoint ``stem`` if its files (weights, state, and the RNG file of each
        rank 1..world_size-1) exist and agree, and it is a checkpoint of ``run_id`` (when
        set), else None."""
        if not (self.weights(stem).exists() and self.state(stem).exists()):
            return None
        try:
            meta = read_checkpoint_meta(self.weights(stem))
            step, ident = read_state_id(self.state(stem))
        except CheckpointError:
            return None
        if self.run_id is not None and not ident.startswith(f"{self.run_id}:"):
            return None
        ranks_agree = all(read_rank_rng_id(self.rank_rng(stem, k)) == ident
                          for k in range(1, world_size))
        return step if meta.extra.get("checkpoint_id") == ident and ranks_agree else None

    def resume_stem(self, world_size: int = 1) -> str:
        """The newest consistent checkpoint (``last`` or a step file); CheckpointError if none."""
        candidates = ["last"] + [p.name[: -len(STATE)]
                                 for p in sorted(self.root.glob("step-*" + STATE), reverse=True)]
        found = [(step, stem) for stem in candidates
                 if (step := self.consistent(stem, world_size)) is not None]
        if not found:
            raise CheckpointError(f"nothing to resume in {self.root} (no complete checkpoint)")
        return max(found, key=lambda t: t[0])[1]

    def remove_stale_temp_files(self) -> None:
        """Our temp files of writes a crash interrupted; the user's files are never touched."""
        remove_stale_temps(self.root)

    # -- pragmatic-mode snapshots: weights + optimizer state by parameter name --------------
    # One pair of files per event (``pragmatic-NNNNNNNN``), removed only once a complete
    # checkpoint no longer names that event as pending: a run killed between judging one event
    # and its next checkpoint still finds the snapshot its newest checkpoint refers to, even if
    # a later event has written its own since.

    def save_snapshot(self, model: nn.Module, optim: OptimState, *, spec: dict,
                      initial_spec: dict, history: Sequence[ReductionEvent], step: int) -> None:
        tensors = {f"optim/{name}/{key}": v for name, entry in optim.items()
                   for key, v in entry.items()}
        stem = snapshot_stem(step)
        save_tensors_atomic(self.state(stem), tensors, {"step": str(step)})
        save_checkpoint(self.weights(stem), model, builder=self.builder, spec=spec,
                        initial_spec=initial_spec,
                        history=tuple(history), extra={"step": str(step)})

    def _snapshot_file(self, step: int, state: bool) -> Path:
        path = (self.state if state else self.weights)(snapshot_stem(step))
        legacy = (self.state if state else self.weights)("pragmatic")  # runs before per-event
        return path if path.exists() or not legacy.exists() else legacy

    def snapshot_weights(self, step: int) -> Path:
        return self._snapshot_file(step, state=False)

    def snapshot_optimizer(self, step: int) -> OptimState:
        tensors, meta = load_tensors(self._snapshot_file(step, state=True))
        if meta.get("step") != str(step):
            raise CheckpointError(f"pragmatic snapshot is from step {meta.get('step')}, "
                                  f"expected {step}")
        optim: OptimState = {}
        for key, t in tensors.items():
            name, _, entry = key[len("optim/"):].rpartition("/")
            optim.setdefault(name, {})[entry] = t
        return optim

    def prune_snapshots(self, keep: int | None) -> None:
        """Remove every snapshot but the one of event ``keep`` (None: all of them)."""
        wanted = None if keep is None else snapshot_stem(keep)
        for path in self.root.glob("pragmatic*" + WEIGHTS):
            match = _SNAPSHOT.fullmatch(path.name)
            if match and match.group(1) != wanted:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


_SNAPSHOT = re.compile(r"(pragmatic(?:-[0-9]{8})?)(?:\.state)?\.safetensors")


def snapshot_stem(step: int) -> str:
    return f"pragmatic-{step:08d}"


def _step_of(state_file: Path) -> int:
    digits = state_file.name[len("step-"):-len(STATE)]
    return int(digits) if digits.isdigit() else -1


__all__ = ["RunDirectory", "snapshot_stem"]
