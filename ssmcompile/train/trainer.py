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
import uuid
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

import passes

from ..api import prepare
from ..compiler import parse_pipeline
from ..compiler.precision import describe_exception
from ..errors import SSMCompileError
from ..ops.threads import available_cores, set_scan_threads
from . import records
from .build import config_json, progress_bar
from .checkpoints import RunDirectory
from .compile import compile_model, should_compile
from .config import TrainConfig
from .data import BatchStream, TaskData, load_task
from .distributed import init_distributed, shutdown, wrap_ddp
from .evaluation import evaluate
from .loop_state import capture_state, load_resume_point, restore_state
from .metrics import MetricsLog, plot_hsv_spectra, plot_training
from .optim_surgery import assign_groups, make_lr_schedule, make_optimizer
from .pragmatic import PragmaticGuard
from .reducer import Pipeline, reduce_model
from .result import TrainResult
from .run_model import ModelFactory, run_model
from .run_state import RunFlags
from .state_io import optimizer_state_by_name, restore_optimizer_state, seed_run
from .task import TASKS, LossFn, Task, as_task
from .user_data import SplitLike, user_task_data

Callback = Callable[["Trainer", int], None]


class Trainer:
    """``Trainer(config, pipeline=None).fit() -> TrainResult``.

    ``pipeline``: a pipeline string or pass list run at each event (default
    ``config.pipeline``); ``resume``: continue from ``config.out_dir``; ``callbacks``: called as
    ``cb(trainer, step)`` after each optimizer step; ``data``: a ready ``TaskData`` (see
    ``user_task_data``) or a training split (``(x, y)`` tensors, a ``Dataset``) instead of the
    one ``config.data`` names; ``model``: your model or a factory of it instead of
    ``config.model``, checkpointed under ``builder`` (default ``"user-model"``); ``task``: how
    a batch is scored (default: the data's task). During ``fit``: ``model`` is the raw module,
    ``forward_model`` the (DDP/compiled) one that trains, ``step`` the updates done, ``dims``
    the blocks' state dimensions.
    """

    def __init__(self, config: TrainConfig, pipeline: Pipeline | None = None, *,
                 resume: bool = False, callbacks: Sequence[Callback] = (),
                 data: TaskData | SplitLike | None = None,
                 model: nn.Module | ModelFactory | None = None,
                 task: Task | str | LossFn | None = None, builder: str | None = None) -> None:
        self.config = config
        self.pipeline = pipeline if pipeline is not None else config.pipeline
        if isinstance(self.pipeline, str):
            # a typo fails now, not at the first event
            parse_pipeline(self.pipeline, passes.default_registry())
        self.resume = resume
        self.callbacks = tuple(callbacks)
        self.data = data if data is None or isinstance(data, TaskData) else user_task_data(data)
        self.source = run_model(config, self.data, model, builder) if model is not None else None
        self.task_arg = task
        if resume and config.out_dir is None:
            raise SSMCompileError("resume needs config.out_dir (the run directory)")

    # ---- setup ---------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.config
        self.ctx = init_distributed(cfg.device)
        self.device = self.ctx.device
        self.data = self.data or load_task(cfg.data)
        self.task = as_task(self.task_arg, self.data.task if self.data.task in TASKS
                            else "classify")
        self.source = self.source or run_model(cfg, self.data)
        self.run_dir = (RunDirectory(cfg.out_dir, cfg.keep_last, self.source.builder)
                        if cfg.out_dir else None)
        self.stream = BatchStream(len(self.data.train), cfg.data.batch_size, cfg.seed,
                                  rank=self.ctx.rank, world_size=self.ctx.world_size)
        saved = None
        if self.resume:
            stem, model, meta, saved = load_resume_point(
                self.run_dir, self.ctx.world_size, self.source.builder, self.source.load)
            self.initial_spec, self.history = meta.initial_spec, list(meta.history)
        else:
            seed_run(cfg.seed)
            model, self.history = self.source.factory(), []
            if self.ctx.rank > 0:  # own dropout stream per rank (DDP syncs the weights)
                torch.manual_seed(cfg.seed + 1_000_003 * self.ctx.rank)
        self.model = model.to(self.device).train()
        self.example_inputs = self.data.train.x[: cfg.probe_size].to(self.device)
        with torch.random.fork_rng(devices=[]):
            blocks = prepare(self.model, self.example_inputs).blocks
        self.blocks = tuple(b.name for b in blocks)
        if saved is None:
            self.initial_spec = self.source.initial_spec(self.model, blocks)
        self.spec = self.source.spec(self.initial_spec, self.history)
        self.optimizer = make_optimizer(self.model, self.blocks, cfg.optim)
        self.scheduler = make_lr_schedule(self.optimizer, cfg.steps, cfg.optim)
        self.step = 0
        # one id for every rank: ranks > 0 tag their RNG files with rank 0's checkpoint ids
        self.flags = RunFlags(run_id=f"{self.ctx.broadcast_int(uuid.uuid4().int >> 72):014x}")
        self.guard = PragmaticGuard(cfg.pragmatic, self.run_dir, self.ctx.is_main,
                                    self.source.load)
        records = []
        if saved is not None:
            restore_state(saved, self.model, self.optimizer, self.scheduler, self.stream,
                          self.guard, self.ctx, self.run_dir, stem, cfg.threads)
            self.step, self.flags, records = saved.step, saved.flags, saved.metrics
        main_dir = self.run_dir if self.ctx.is_main else None
        self.metrics = MetricsLog(main_dir.root / "metrics.jsonl" if main_dir else None, records)
        self.event_steps = set(cfg.schedule.event_steps(cfg.steps))
        self._wrap()

    @property
    def dims(self) -> tuple[int, ...]:
        return self.source.dims(self.spec)

    def _wrap(self) -> None:
        fwd = wrap_ddp(self.model, self.ctx)
        if should_compile(self.config.compile, self.device):
            fwd = compile_model(fwd, self.config.compile_backend)
        self.forward_model = fwd

    # ---- the loop ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        scans_before = set_scan_threads(cfg.scan_threads or available_cores())
        self._setup()
        try:
            return self._loop()
        finally:
            set_scan_threads(scans_before)
            shutdown(self.ctx)

    def _loop(self) -> TrainResult:
        cfg, train = self.config, self.data.train
        dims_initial = self.source.dims(self.initial_spec)
        bar = progress_bar(cfg, self.step, self.ctx.is_main)
        start, window_start, window = time.perf_counter(), time.perf_counter(), []
        while self.step < cfg.steps:
            idx = self.stream.next_indices()
            window.append(self._train_step(train.x[idx].to(self.device),
                                           train.y[idx].to(self.device)))
            self.step += 1
            step = self.step
            for callback in self.callbacks:
                callback(self, step)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = len(window) / max(time.perf_counter() - window_start, 1e-9)
                self._log(step, window, rate, bar)
                window_start, window = time.perf_counter(), []
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
                                  self.config.threads)
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
