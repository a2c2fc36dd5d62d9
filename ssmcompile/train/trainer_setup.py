"""How a trainer gets to its first step: data, model, run directory, and (on resume) every
piece of state back in place.

Order matters: everything that can be checked without writing is checked first (in
``Trainer.__init__`` and ``run_dir.check_start``), then rank 0 locks the run directory and
decides whether this run may start or continue there (``run_dir.RunSession``), and only once
the whole setup has held is the run's identity written; a setup that fails removes what it
created.
"""

from __future__ import annotations

import uuid

import torch

from ..api import prepare
from .checkpoints import RunDirectory
from .compile import compile_model, should_compile
from .data import BatchStream, load_task
from .distributed import init_distributed, wrap_ddp
from .loop_state import load_resume_point, restore_state
from .metrics import MetricsLog
from .optim_surgery import make_lr_schedule, make_optimizer
from .pragmatic import PragmaticGuard
from .run_dir import RunSession, check_steps
from .run_identity import data_fingerprint
from .run_model import run_model
from .run_state import RunFlags
from .state_io import seed_run
from .task import TASKS, as_task


class RunSetup:
    """The setup half of ``Trainer`` (see there for the attributes it sets)."""

    def _setup(self) -> None:
        cfg = self.config
        self.ctx = init_distributed(cfg.device)
        self.device = self.ctx.device
        self.data = self.data or load_task(cfg.data)
        self.task = as_task(self.task_arg, self.data.task if self.data.task in TASKS
                            else "classify")
        self.source = self.source or run_model(cfg, self.data)
        self.stream = BatchStream(len(self.data.train), cfg.data.batch_size, cfg.seed,
                                  rank=self.ctx.rank, world_size=self.ctx.world_size)
        run_id = f"{uuid.uuid4().int >> 72:014x}"
        if cfg.out_dir is None:
            return self._start(run_id)
        self.session = RunSession.open(cfg.out_dir, self.ctx.is_main, resume=self.resume,
                                       force=self.force)
        try:
            if self.ctx.is_main:
                run_id = self.session.begin(
                    cfg, resume=self.resume, force=self.force, override=self.override,
                    builder=self.source.builder, data=data_fingerprint(self.data),
                    new_run_id=run_id)
            self._start(run_id)
        except BaseException:
            self.session.abandon()
            raise

    def _start(self, run_id: str) -> None:
        cfg = self.config
        # one id for every rank: ranks > 0 tag their RNG files with rank 0's checkpoint ids
        run_id = f"{self.ctx.broadcast_int(int(run_id, 16)):014x}"
        self.run_dir = (RunDirectory(cfg.out_dir, cfg.keep_last, self.source.builder, run_id)
                        if cfg.out_dir else None)
        point = None
        if self.resume:
            point = load_resume_point(self.run_dir, self.ctx.world_size, self.source.builder,
                                      self.source.load)
        if point is not None:
            stem, model, meta, saved = point
            self.initial_spec, self.history = meta.initial_spec, list(meta.history)
            check_steps(cfg, saved.step)
        else:  # a fresh run, or one killed before its first complete checkpoint
            saved = None
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
        self.step, self.window = 0, []
        self.flags = RunFlags(run_id=run_id)
        self.guard = PragmaticGuard(cfg.pragmatic, self.run_dir, self.ctx.is_main,
                                    self.source.load)
        records = []
        if saved is not None:
            restore_state(saved, self.model, self.optimizer, self.scheduler, self.stream,
                          self.guard, self.ctx, self.run_dir, stem, cfg.threads)
            self.step, self.flags, records = saved.step, saved.flags, saved.metrics
            self.window = list(saved.window)
        if self.session is not None:
            self.session.commit(self.step)
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


__all__ = ["RunSetup"]
