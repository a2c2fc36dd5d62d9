"""The resumable in-training compression loop: train, and at scheduled steps shrink the model.

At step s (s optimizer updates done) the loop, in this order: calls the callbacks, evaluates
(every ``eval_every`` steps and at the end), runs a reduction event (at schedule steps), and
writes a checkpoint (every ``checkpoint_every`` steps, after each event, and at the end). A
checkpoint therefore captures the loop exactly between two steps, and ``resume=True``
continues bit-exactly (CPU, same thread count) as if never interrupted: the architecture is
rebuilt by replaying the reduction history, weights, optimizer and LR-scheduler state, data
position and every RNG state are restored.

Pragmatic mode: just before an event the validation accuracy is measured and the model (with
its optimizer state) is kept, in memory and in ``DIR/pragmatic.*``; if the next evaluation's
accuracy is more than ``tolerance`` lower, the model and optimizer state roll back to it and no
further event runs. The step counter, LR schedule and data stream are not rewound.
"""

from __future__ import annotations

import random
import time
import uuid
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import passes

from ..api import prepare
from ..compiler import parse_pipeline
from ..compiler.precision import describe_exception
from ..errors import SSMCompileError
from ..io import get_builder, load_checkpoint
from .build import builder_name, config_json, initial_model, progress_bar
from .checkpoints import RunDirectory
from .compile import compile_model, should_compile
from .config import TrainConfig
from .data import BatchStream, TaskData, load_task
from .distributed import init_distributed, shutdown, wrap_ddp
from .evaluation import evaluate
from .metrics import MetricsLog, plot_hsv_spectra, plot_training
from .optim_surgery import assign_groups, make_lr_schedule, make_optimizer
from .pragmatic import PragmaticGuard
from .reducer import Pipeline, reduce_model
from .result import TrainResult
from .state_io import (
    TrainerState,
    capture_rng,
    group_layout,
    load_trainer_state,
    optimizer_state_by_name,
    restore_group_layout,
    restore_optimizer_state,
    restore_rng,
)

Callback = Callable[["Trainer", int], None]


class Trainer:
    """``Trainer(config, pipeline=None).fit() -> TrainResult``.

    ``pipeline``: a pipeline string or pass list run at each event (default
    ``config.pipeline``); ``resume``: continue from ``config.out_dir``; ``callbacks``: called as
    ``cb(trainer, step)`` after each optimizer step; ``data``: a ready ``TaskData`` instead of
    the one ``config.data`` names. During ``fit``: ``model`` is the raw module,
    ``forward_model`` the (DDP/compiled) one that trains, ``step`` the updates done.
    """

    def __init__(self, config: TrainConfig, pipeline: Pipeline | None = None, *,
                 resume: bool = False, callbacks: Sequence[Callback] = (),
                 data: TaskData | None = None) -> None:
        self.config = config
        self.pipeline = pipeline if pipeline is not None else config.pipeline
        if isinstance(self.pipeline, str):
            # a typo fails now, not at the first event
            parse_pipeline(self.pipeline, passes.default_registry())
        self.resume = resume
        self.callbacks = tuple(callbacks)
        self.data = data
        if resume and config.out_dir is None:
            raise SSMCompileError("resume needs config.out_dir (the run directory)")

    # ---- setup ---------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.config
        self.ctx = init_distributed(cfg.device)
        self.device = self.ctx.device
        self.builder = builder_name(cfg)
        self.run_dir = (RunDirectory(cfg.out_dir, cfg.keep_last, self.builder) if cfg.out_dir
                        else None)
        self.data = self.data or load_task(cfg.data)
        self.stream = BatchStream(len(self.data.train), cfg.data.batch_size, cfg.seed,
                                  rank=self.ctx.rank, world_size=self.ctx.world_size)
        saved = None
        if self.resume:
            self.run_dir.remove_stale_temp_files()
            stem = self.run_dir.resume_stem()
            model, meta = load_checkpoint(self.run_dir.weights(stem))
            if meta.builder != self.builder:
                raise SSMCompileError(f"cannot resume: the run's model is {meta.builder!r}, "
                                      f"the config describes {self.builder!r}")
            self.initial_spec, self.history = meta.initial_spec, list(meta.history)
            saved = load_trainer_state(self.run_dir.state(stem))
        else:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
            np.random.seed(cfg.seed)
            model = initial_model(cfg, self.data)
            self.initial_spec, self.history = model.spec.to_dict(), []
            if self.ctx.rank > 0:  # own dropout stream per rank (DDP syncs the weights)
                torch.manual_seed(cfg.seed + 1_000_003 * self.ctx.rank)
        self.model = model.to(self.device).train()
        self.example_inputs = self.data.train.x[: cfg.probe_size].to(self.device)
        with torch.random.fork_rng(devices=[]):
            self.blocks = tuple(b.name for b in prepare(self.model, self.example_inputs).blocks)
        self.optimizer = make_optimizer(self.model, self.blocks, cfg.optim)
        self.scheduler = make_lr_schedule(self.optimizer, cfg.steps, cfg.optim)
        self.step = 0
        self.flags = {"run_id": uuid.uuid4().hex, "reducing": True, "rolled_back_at": None,
                      "best_val_acc": None}
        self.guard = PragmaticGuard(cfg.pragmatic, self.run_dir, self.ctx.is_main)
        records = []
        if saved is not None:
            self._restore(saved)
            records = saved.metrics
        main_dir = self.run_dir if self.ctx.is_main else None
        self.metrics = MetricsLog(main_dir.root / "metrics.jsonl" if main_dir else None, records)
        self.event_steps = set(cfg.schedule.event_steps(cfg.steps))
        self._wrap()

    def _restore(self, saved: TrainerState) -> None:
        restore_group_layout(self.optimizer, self.model, saved.groups)
        restore_optimizer_state(self.optimizer, self.model, saved.optimizer)
        # the multiplier is a function of (step, config.steps); only the position is restored
        self.scheduler.load_state_dict(
            {**saved.scheduler, "lr_lambdas": [None] * len(self.optimizer.param_groups)})
        self.stream.restore(saved.data, saved.perm)
        self.step, self.flags = saved.step, dict(saved.flags)
        if saved.threads != self.config.threads:
            warnings.warn(f"resuming with {self.config.threads} thread(s), the run used "
                          f"{saved.threads}: CPU results may differ in the last bits",
                          stacklevel=3)
        restore_rng(*saved.rng)
        if self.ctx.rank > 0:
            torch.manual_seed(self.config.seed + 1_000_003 * self.ctx.rank + self.step)
        self.guard.restore(self.flags.pop("pending", None), self.device)

    def _wrap(self) -> None:
        fwd = wrap_ddp(self.model, self.ctx)
        if should_compile(self.config.compile, self.device):
            fwd = compile_model(fwd, self.config.compile_backend)
        self.forward_model = fwd

    # ---- the loop ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        self._setup()
        try:
            return self._loop()
        finally:
            shutdown(self.ctx)

    def _loop(self) -> TrainResult:
        cfg, train = self.config, self.data.train
        dims_initial = tuple(get_builder(self.builder).state_dims(self.initial_spec).values())
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
                loss, acc = (float(np.mean(v)) for v in zip(*window, strict=True))
                self.metrics.append({"kind": "train", "step": step, "loss": loss, "acc": acc,
                                     "lr": self.optimizer.param_groups[0]["lr"],
                                     "dims": list(self.model.state_dims),
                                     "steps_per_s": rate, "threads": cfg.threads})
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}",
                                dims="/".join(map(str, self.model.state_dims)),
                                steps_s=f"{rate:.1f}")
                window_start, window = time.perf_counter(), []
            bar.update(1)
            val = self._evaluate(step) if step % cfg.eval_every == 0 or step == cfg.steps else None
            event = step in self.event_steps and self.flags["reducing"]
            if event:
                self._event(step, val)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or event:
                self._checkpoint(step)
        bar.close()
        return self._finish(dims_initial, time.perf_counter() - start)

    def _train_step(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        out = self.forward_model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), float((out.detach().argmax(-1) == y).float().mean())

    def _evaluate(self, step: int) -> float:
        """Validation accuracy; settles a pending pragmatic event; keeps the best weights."""
        self.ctx.sync_module(self.model, params=False)
        val_loss, val_acc = evaluate(self.model, self.data.val)
        self.metrics.append({"kind": "eval", "step": step, "val_loss": val_loss,
                             "val_acc": val_acc, "dims": list(self.model.state_dims)})
        verdict = self.guard.judge(val_acc)
        if verdict:
            self._rollback(step, val_acc)
        elif verdict is False:
            self.guard.settle()
        best = self.flags["best_val_acc"]
        if best is None or val_acc > best:
            self.flags["best_val_acc"] = val_acc
            if self.run_dir and self.ctx.is_main:
                self.run_dir.save("best", self.model, spec=self.model.spec.to_dict(),
                                  initial_spec=self.initial_spec, history=self.history,
                                  extra={"step": str(step), "val_acc": repr(val_acc)})
        return val_acc

    def _event(self, step: int, val: float | None) -> None:
        if self.config.pragmatic.enabled:
            val = val if val is not None else self._evaluate(step)
            if not self.flags["reducing"]:  # that evaluation rolled the last event back
                return
            self.guard.keep(step, val, self.model, self.history,
                            optimizer_state_by_name(self.optimizer, self.model), self.initial_spec)
        self.ctx.sync_module(self.model, params=False)
        try:
            new, applied = reduce_model(self.model, self.optimizer, self.pipeline,
                                        self.example_inputs, step)
        except Exception as err:  # noqa: BLE001 - any pipeline failure skips the event
            if self.config.strict_reduction:
                raise
            self.metrics.append({"kind": "skipped", "step": step,
                                 "reason": describe_exception(err)})
            self.guard.settle()
            return
        if applied is None:
            self.guard.settle()
            return
        self.ctx.check_agree(list(applied.dims_after.values()), "state dims after reduction")
        self.ctx.sync_module(new)
        self.model = new
        self.history.extend(applied.events)
        self._wrap()
        self.metrics.append({
            "kind": "reduction", "step": step, "seconds": applied.seconds,
            "dims_before": [applied.dims_before[b] for b in self.blocks],
            "dims_after": [applied.dims_after[b] for b in self.blocks],
            "blocks": {e.block: {"n": e.n, "r": e.r, "bound": e.bound,
                                 "hsv": list(applied.spectra[e.block])}
                       for e in applied.events},
        })
        if self.run_dir and self.ctx.is_main:
            plot_hsv_spectra(self.metrics.records, self.run_dir.root / "hsv_spectra.png")

    def _rollback(self, step: int, val_acc: float) -> None:
        snapshot, pending = self.guard.snapshot, self.guard.pending
        dims = list(self.model.state_dims)
        self.model, self.history = snapshot.model, snapshot.history
        assign_groups(self.optimizer, self.model, self.blocks)
        restore_optimizer_state(self.optimizer, self.model, snapshot.optim)
        self._wrap()
        self.metrics.append({"kind": "rollback", "step": step, "val_acc": val_acc,
                             "baseline": pending["baseline"], "event_step": pending["step"],
                             "dims_from": dims, "dims_to": list(self.model.state_dims)})
        self.flags["reducing"], self.flags["rolled_back_at"] = False, step
        self.guard.settle()

    def _checkpoint(self, step: int) -> None:
        if self.run_dir is None:
            return
        if self.ctx.is_main:
            ident = f"{self.flags['run_id']}:{step}"
            data_pos, perm = self.stream.state()
            state = TrainerState(
                step=step, checkpoint_id=ident,
                optimizer=optimizer_state_by_name(self.optimizer, self.model),
                groups=group_layout(self.optimizer, self.model),
                scheduler={k: v for k, v in self.scheduler.state_dict().items()
                           if k != "lr_lambdas"},
                data=data_pos, perm=perm,
                rng=capture_rng(), metrics=self.metrics.records,
                flags={**self.flags, "pending": self.guard.pending},
                threads=self.config.threads)
            extra = {"checkpoint_id": ident, "step": str(step),
                     "world_size": str(self.ctx.world_size), "threads": str(self.config.threads),
                     "config": config_json(self.config)}
            self.run_dir.save_step(step, self.model, spec=self.model.spec.to_dict(),
                                   initial_spec=self.initial_spec, history=self.history,
                                   extra=extra, state=state)
        self.ctx.barrier()

    def _finish(self, dims_initial: tuple[int, ...], seconds: float) -> TrainResult:
        _, test_acc = evaluate(self.model, self.data.test)
        evals = self.metrics.of_kind("eval")
        if self.run_dir and self.ctx.is_main:
            plot_training(self.metrics.records, self.run_dir.root / "training.png")
        return TrainResult(
            model=self.model, history=tuple(self.history), dims_initial=dims_initial,
            dims_final=tuple(self.model.state_dims),
            val_acc=evals[-1]["val_acc"] if evals else None,
            best_val_acc=self.flags["best_val_acc"], test_acc=test_acc, steps=self.step,
            seconds=seconds, threads=self.config.threads,
            rolled_back_at=self.flags["rolled_back_at"],
            out_dir=self.run_dir.root if self.run_dir else None, metrics=self.metrics.records)


def train(config: TrainConfig, pipeline: Pipeline | None = None, *, resume: bool = False,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """``Trainer(config, pipeline, resume=resume, callbacks=callbacks).fit()``."""
    return Trainer(config, pipeline, resume=resume, callbacks=callbacks).fit()


__all__ = ["Trainer", "TrainResult", "Callback", "train"]
