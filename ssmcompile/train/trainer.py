"""The resumable in-training compression loop: train, and at scheduled steps shrink the model.

At step s (s optimizer updates done) the loop, in this order: calls the callbacks, evaluates
(every ``eval_every`` steps and at the end), runs a reduction event (at schedule steps), and
writes a checkpoint (every ``checkpoint_every`` steps, after each event, and at the end). A
checkpoint therefore captures the loop exactly between two steps, and ``resume=True``
continues bit-exactly (CPU, same thread count) as if never interrupted: the architecture is
rebuilt by replaying the reduction history, weights, optimizer and LR-scheduler state, data
position and every RNG state are restored.

The model is the one ``config.model`` describes, or your own (``model=``: a factory or an
instance, deep-copied), trained on ``config.data`` or your own ``data=`` with the task's
loss (``task=``: ``"classify"``, ``"lm"`` or a ``loss_fn``, see ``train.task``); checkpoints
of your model reload with ``load_checkpoint(path, model=factory)`` (see ``train.run_model``).

Pragmatic mode (``train.pragmatic``): an event that cost validation accuracy is rolled back at
the next evaluation, and no further event runs; step, LR schedule and data are not rewound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

import passes

from ..compiler import parse_pipeline
from ..compiler.precision import describe_exception
from ..errors import SSMCompileError
from ..ops.threads import available_cores, set_scan_threads
from . import records
from .build import config_json, progress_bar
from .config import TrainConfig
from .data import TaskData
from .distributed import shutdown
from .evaluation import evaluate
from .loop_state import capture_state
from .metrics import plot_hsv_spectra, plot_training
from .optim_surgery import assign_groups
from .reducer import Pipeline, reduce_model
from .result import TrainResult
from .run_dir import RunSession, check_start
from .run_model import ModelFactory, run_model
from .state_io import optimizer_state_by_name, restore_optimizer_state
from .task import LossFn, Task
from .trainer_setup import RunSetup
from .user_data import SplitLike, user_task_data

Callback = Callable[["Trainer", int], None]


class Trainer(RunSetup):
    """``Trainer(config, pipeline=None).fit() -> TrainResult``.

    ``pipeline``: a pipeline string or pass list run at each event (default
    ``config.pipeline``); ``resume``: continue from ``config.out_dir``; ``callbacks``: called as
    ``cb(trainer, step)`` after each optimizer step; ``force``: start a new run in a
    directory that holds files (an earlier run's are deleted, see ``run_dir``); ``override``:
    config fields a resume may change (``run_identity.OVERRIDABLE``); ``data``: a ready
    ``TaskData`` (see ``user_task_data``) or a training split (``(x, y)`` tensors, a
    ``Dataset``) instead of the one ``config.data`` names; ``model``: your model or a factory
    of it instead of ``config.model``, checkpointed under ``builder`` (default
    ``"user-model"``); ``task``: how a batch is scored (default: the data's task). During
    ``fit``: ``model`` is the raw module, ``forward_model`` the (DDP/compiled) one that
    trains, ``step`` the updates done, ``dims`` the blocks' state dimensions.
    """

    def __init__(self, config: TrainConfig, pipeline: Pipeline | None = None, *,
                 resume: bool = False, callbacks: Sequence[Callback] = (),
                 data: TaskData | SplitLike | None = None,
                 model: nn.Module | ModelFactory | None = None,
                 task: Task | str | LossFn | None = None, builder: str | None = None,
                 force: bool = False, override: Sequence[str] = ()) -> None:
        self.config = config
        self.pipeline = pipeline if pipeline is not None else config.pipeline
        if isinstance(self.pipeline, str):
            # a typo fails now, not at the first event
            parse_pipeline(self.pipeline, passes.default_registry())
        # everything cheap is checked before a file is created (device, schedule, options)
        self.override = check_start(config, resume=resume, force=force, override=override)
        self.resume, self.force = resume, force
        self.callbacks = tuple(callbacks)
        self.data = data if data is None or isinstance(data, TaskData) else user_task_data(data)
        self.source = run_model(config, self.data, model, builder) if model is not None else None
        self.task_arg = task
        self.session: RunSession | None = None

    # ---- the loop ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        scans_before = set_scan_threads(cfg.scan_threads or available_cores())
        try:
            self._setup()
            return self._loop()
        finally:
            set_scan_threads(scans_before)
            if self.session is not None:
                self.session.close()
            if hasattr(self, "ctx"):
                shutdown(self.ctx)

    def _loop(self) -> TrainResult:
        cfg, train = self.config, self.data.train
        dims_initial = self.source.dims(self.initial_spec)
        bar = progress_bar(cfg, self.step, self.ctx.is_main)
        start = window_start = time.perf_counter()
        timed = 0  # steps of the window this process ran (the rest came from a checkpoint)
        while self.step < cfg.steps:
            idx = self.stream.next_indices()
            self.window.append(self._train_step(train.x[idx].to(self.device),
                                                train.y[idx].to(self.device)))
            self.step, timed = self.step + 1, timed + 1
            step = self.step
            for callback in self.callbacks:
                callback(self, step)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = timed / max(time.perf_counter() - window_start, 1e-9)
                self._log(step, self.window, rate, bar)
                window_start, timed, self.window = time.perf_counter(), 0, []
            bar.update(1)
            val = self._evaluate(step) if step % cfg.eval_every == 0 or step == cfg.steps else None
            event = step in self.event_steps and self.flags.reducing
            if event:
                self._event(step, val)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or event:
                self._checkpoint(step)
        bar.close()
        return self._finish(dims_initial, time.perf_counter() - start)

    def _log(self, step: int, window: list[tuple[float, float]], rate: float, bar) -> None:
        loss, acc = (float(np.mean(v)) for v in zip(*window, strict=True))
        if not math.isfinite(loss):
            raise SSMCompileError(f"training diverged: the mean loss of steps "
                                  f"{step - len(window) + 1}..{step} is {loss} (lower optim.lr "
                                  "or set optim.grad_clip)")
        lr = self.optimizer.param_groups[0]["lr"]
        self.metrics.append(records.TrainRecord(step, loss, acc, lr, self.dims, rate,
                                                self.config.threads))
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", dims="/".join(map(str, self.dims)),
                        steps_s=f"{rate:.1f}")

    def _train_step(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        loss, score = self.task(self.forward_model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), score / max(1, y.numel())

    def _evaluate(self, step: int) -> float:
        """Validation accuracy; settles a pending pragmatic event; keeps the best weights."""
        self.ctx.sync_module(self.model, params=False)
        val_loss, val_acc = evaluate(self.model, self.data.val, self.task)
        self.metrics.append(records.EvalRecord(step, val_loss, val_acc, self.dims))
        verdict = self.guard.judge(val_acc)
        if verdict:
            self._rollback(step, val_acc)
        elif verdict is False:
            self.guard.settle()
        best = self.flags.best_val_acc
        if best is None or val_acc > best:
            self.flags.best_val_acc = val_acc
            if self.run_dir and self.ctx.is_main:
                self.run_dir.save("best", self.model, spec=self.spec,
                                  initial_spec=self.initial_spec, history=self.history,
                                  extra={"step": str(step), "val_acc": repr(val_acc)})
        return val_acc

    def _event(self, step: int, val: float | None) -> None:
        if self.config.pragmatic.enabled:
            val = val if val is not None else self._evaluate(step)
            if not self.flags.reducing:  # that evaluation rolled the last event back
                return
            self.guard.keep(step, val, self.model, self.history,
                            optimizer_state_by_name(self.optimizer, self.model), self.spec,
                            self.initial_spec)
        self.ctx.sync_module(self.model, params=False)
        try:
            new, applied = reduce_model(self.model, self.optimizer, self.pipeline,
                                        self.example_inputs, step)
        except Exception as err:  # noqa: BLE001 - any pipeline failure skips the event
            if self.config.strict_reduction:
                raise
            self.metrics.append(records.SkippedRecord(step, describe_exception(err)))
            self.guard.settle()
            return
        if applied is None:
            self.guard.settle()
            return
        self.ctx.check_agree(list(applied.dims_after.values()), "state dims after reduction")
        self.ctx.sync_module(new)
        self.model = new
        self.history.extend(applied.events)
        self.spec = self.source.spec(self.initial_spec, self.history)
        self._wrap()
        self.metrics.append(records.ReductionRecord.of(applied, self.blocks))
        if self.run_dir and self.ctx.is_main:
            plot_hsv_spectra(self.metrics.records, self.run_dir.root / "hsv_spectra.png")

    def _rollback(self, step: int, val_acc: float) -> None:
        snapshot, pending = self.guard.snapshot, self.guard.pending
        dims = self.dims
        self.model, self.history = snapshot.model, snapshot.history
        self.spec = self.source.spec(self.initial_spec, self.history)
        assign_groups(self.optimizer, self.model, self.blocks)
        restore_optimizer_state(self.optimizer, self.model, snapshot.optim)
        self._wrap()
        self.metrics.append(records.RollbackRecord(step, val_acc, pending.baseline, pending.step,
                                                   dims, self.dims))
        self.flags.reducing, self.flags.rolled_back_at = False, step
        self.guard.settle()

    def _checkpoint(self, step: int) -> None:
        if self.run_dir is None:
            return
        ident = f"{self.flags.run_id}:{step}"
        if not self.ctx.is_main:
            self.run_dir.save_rank_step(step, self.ctx.rank, ident)
        else:
            state = capture_state(step, ident, self.model, self.optimizer, self.scheduler,
                                  self.stream, self.metrics.records, self.flags, self.guard,
                                  self.config.threads, self.window)
            extra = {"checkpoint_id": ident, "step": str(step), "config": config_json(self.config),
                     "world_size": str(self.ctx.world_size), "threads": str(self.config.threads)}
            self.run_dir.save_step(step, self.model, spec=self.spec, extra=extra, state=state,
                                   initial_spec=self.initial_spec, history=self.history)
        self.ctx.barrier()

    def _finish(self, dims_initial: tuple[int, ...], seconds: float) -> TrainResult:
        test_acc = (evaluate(self.model, self.data.test, self.task)[1]
                    if self.data.test is not None else None)
        evals = records.of_kind(self.metrics.records, records.EvalRecord)
        if self.run_dir and self.ctx.is_main:
            plot_training(self.metrics.records, self.run_dir.root / "training.png")
        return TrainResult(
            model=self.model, history=tuple(self.history), dims_initial=dims_initial,
            dims_final=self.dims, val_acc=evals[-1].val_acc if evals else None,
            best_val_acc=self.flags.best_val_acc, test_acc=test_acc, steps=self.step,
            seconds=seconds, threads=self.config.threads, rolled_back_at=self.flags.rolled_back_at,
            out_dir=self.run_dir.root if self.run_dir else None, metrics=self.metrics.records)


def train(config: TrainConfig, pipeline: Pipeline | None = None, **options) -> TrainResult:
    """``Trainer(config, pipeline, **options).fit()`` (``resume``, ``callbacks``, ``data``,
    ``model``, ``task``, ``builder``)."""
    return Trainer(config, pipeline, **options).fit()


__all__ = ["Trainer", "TrainResult", "Callback", "train"]
