"""The experiment harness: one training run per arm and seed, cached, timed and evaluated.

Every run goes through ``ssmcompile.train.Trainer`` (eager, no checkpoints, no trainer plots,
so none of that I/O lands in the timings) with a ``Probe`` callback that

- times every optimizer step (the callback-to-callback interval, minus the probe's own work),
  in wall time and in this process's CPU time (which other processes' load on the shared
  machine leaves nearly untouched), so the duration of step s+1 holds the event run after s;
- evaluates validation and test accuracy every ``eval_every`` steps (excluded from the times);
- reads the block systems at ``snapshot_steps`` (experiment C; also excluded).

The pipeline runs as ``TimedPass``-wrapped passes, so each event's time splits into analysis,
truncation, verification and the rest (capture, matching, optimizer surgery).

A run's directory holds ``result.json`` (written atomically, last) and ``metrics.jsonl``; a
directory whose ``result.json`` records the same ``ArmSpec`` is a finished run and is reused,
which makes every script resumable and lets experiments share runs (C and D read A's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from paired import summarise as summarise_values

import passes
from ssmcompile.adapters import adapter_for
from ssmcompile.compiler import ModulePass, PassResult, parse_pipeline
from ssmcompile.errors import SSMCompileError
from ssmcompile.io import write_bytes_atomic
from ssmcompile.train import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ReductionSchedule,
    TrainConfig,
    load_task,
)
from ssmcompile.train import trainer as trainer_module
from ssmcompile.train.evaluation import evaluate
from ssmcompile.train.records import ReductionRecord, SkippedRecord, of_kind, record_to_json

PAPER_EVENTS = (0.025, 0.05, 0.075, 0.10)  # 4 events evenly inside the first 10 % of steps


@dataclass(frozen=True)
class ArmSpec:
    """Everything that defines one run; equal specs are the same run (the cache key).

    ``state_dims``: one initial n per block; ``pipeline``: run at each of ``event_fractions``
    (``None``: never reduce); ``snapshot_steps``: steps at which the block systems are read;
    ``compile``: ``"off"`` (eager) or ``"on"`` (torch.compile, recompiled after each event).
    """

    experiment: str
    arm: str
    seed: int
    state_dims: tuple[int, ...]
    d_model: int
    steps: int
    batch_size: int
    lr: float
    warmup_fraction: float = 0.1  # of the steps, linear, then cosine (OptimConfig)
    pipeline: str | None = None
    event_fractions: tuple[float, ...] = PAPER_EVENTS
    eval_every: int = 100
    layer: str = "lru"
    dropout: float = 0.0
    dataset: str = "digits"
    data_path: str | None = None
    upsample: bool = True
    threads: int = 1
    scan_threads: int = 0  # the scan kernels' threads; 0 = every core (the trainer's default)
    snapshot_steps: tuple[int, ...] = ()
    compile: str = "off"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def run_dir(self, root: Path) -> Path:
        slug = "".join(c if c.isalnum() or c in "=.-" else "_" for c in self.arm)
        return root / self.experiment / slug / f"seed{self.seed}"

    def train_config(self) -> TrainConfig:
        reducing = self.pipeline is not None
        return TrainConfig(
            model=ModelConfig(layer=self.layer, d_model=self.d_model,
                              state_dim=self.state_dims[0], n_blocks=len(self.state_dims),
                              state_dims=self.state_dims, dropout=self.dropout),
            data=DataConfig(dataset=self.dataset, path=self.data_path,
                            batch_size=self.batch_size, upsample=self.upsample),
            optim=OptimConfig(lr=self.lr, warmup_fraction=self.warmup_fraction),
            schedule=(ReductionSchedule(fractions=self.event_fractions) if reducing
                      else ReductionSchedule.never()),
            steps=self.steps, seed=self.seed, threads=self.threads,
            scan_threads=self.scan_threads, compile=self.compile,
            eval_every=self.steps, log_every=10, checkpoint_every=self.steps,
            progress=False, out_dir=None,
            **({"pipeline": self.pipeline} if reducing else {}))


@dataclass(frozen=True)
class TimedPass(ModulePass):
    """Runs ``inner`` and appends (pass name, seconds) to ``log``."""

    inner: ModulePass | None = None
    log: list = field(default_factory=list, compare=False, hash=False)

    def spec(self) -> str:
        return self.inner.spec()

    def run(self, state) -> PassResult:
        start = time.perf_counter()
        result = self.inner.run(state)
        self.log.append((self.inner.name, time.perf_counter() - start))
        return result


class Probe:
    """The training-loop callback (see the module docstring); ``excluded`` is its own time."""

    def __init__(self, spec: ArmSpec, pass_log: list) -> None:
        self.spec, self.pass_log = spec, pass_log
        self.step_seconds: dict[int, float] = {}
        self.step_cpu: dict[int, float] = {}
        self.evals: list[dict[str, Any]] = []
        self.snapshots: list[tuple[int, dict]] = []
        self.pass_seconds: dict[int, dict[str, float]] = {}
        self.excluded, self._last_exit, self._last_cpu = 0.0, None, None

    def __call__(self, trainer, step: int) -> None:
        entry, entry_cpu = time.perf_counter(), time.process_time()
        if self._last_exit is not None:
            self.step_seconds[step] = entry - self._last_exit
            self.step_cpu[step] = entry_cpu - self._last_cpu
        if self.pass_log:  # the passes of the event run after step - 1
            times: dict[str, float] = {}
            for name, seconds in self.pass_log:
                times[name] = times.get(name, 0.0) + seconds
            self.pass_seconds[step - 1] = times
            self.pass_log.clear()
        if step % self.spec.eval_every == 0 or step == self.spec.steps:
            _, val = evaluate(trainer.model, trainer.data.val)
            _, test = evaluate(trainer.model, trainer.data.test)
            self.evals.append({"step": step, "dims": list(trainer.model.state_dims),
                               "val_acc": val, "test_acc": test})
        if step in self.spec.snapshot_steps:
            with torch.no_grad():
                systems = {}
                for name in trainer.blocks:
                    module = trainer.model.get_submodule(name)
                    systems[name] = adapter_for(module).read(module)
            self.snapshots.append((step, systems))
        self._last_exit, self._last_cpu = time.perf_counter(), time.process_time()
        self.excluded += self._last_exit - entry


_TASKS: dict[DataConfig, Any] = {}


def _task(config: DataConfig):
    if config not in _TASKS:
        _TASKS[config] = load_task(config)
    return _TASKS[config]


def dataset_sizes(spec: ArmSpec) -> dict[str, Any]:
    """Name, sequence length and split sizes of the data ``spec`` trains on."""
    task = _task(spec.train_config().data)
    return {"name": task.name, "seq_len": task.seq_len, "train": len(task.train),
            "val": len(task.val), "test": len(task.test)}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(data, indent=1, allow_nan=False) + "\n").encode())


def load_result(spec: ArmSpec, root: Path) -> dict | None:
    """The finished run of ``spec`` under ``root``, or None."""
    path = spec.run_dir(root) / "result.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if data.get("spec") == spec.to_dict() else None


def run_arm(spec: ArmSpec, root: Path, taus: tuple[float, ...] = (),
            on_trained: Callable[[Any], None] | None = None) -> dict:
    """Train one arm (or reuse its finished run) and return its result record.

    ``taus``: with ``snapshot_steps``, the τ values the rank-stability report uses;
    ``on_trained``: called with the trainer after a run it trained (not on a reused one), so a
    caller can use the trained model without a checkpoint on disk.
    """
    done = load_result(spec, root)
    if done is not None:
        return done
    from stability import stability_report  # noqa: I001 (sibling module of the scripts)

    pass_log: list = []
    registry = passes.default_registry()
    pipeline = ([TimedPass(p, pass_log) for p in parse_pipeline(spec.pipeline, registry)]
                if spec.pipeline else None)
    probe = Probe(spec, pass_log)
    config = spec.train_config()
    load_before = os.getloadavg()
    start = time.perf_counter()
    trainer = trainer_module.Trainer(config, pipeline, callbacks=[probe], data=_task(config.data))
    result = trainer.fit()
    end_to_end = time.perf_counter() - start - probe.excluded
    if on_trained is not None:
        on_trained(trainer)
    record = summarise(spec, result, probe, end_to_end)
    record["load_avg"] = [load_before[0], os.getloadavg()[0]]
    if spec.snapshot_steps:
        record["stability"] = stability_report(probe.snapshots, taus)
    run_dir = spec.run_dir(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = [{k: v for k, v in record_to_json(r).items() if k != "blocks"}
               for r in result.metrics]
    write_bytes_atomic(run_dir / "metrics.jsonl",
                       "".join(json.dumps(m) + "\n" for m in metrics).encode())
    write_json(run_dir / "result.json", record)
    return record


def summarise(spec: ArmSpec, result, probe: Probe, end_to_end: float) -> dict:
    """The JSON record of a finished run (see README's results section for the terms)."""
    events = of_kind(result.metrics, ReductionRecord)
    # the windows come from the arm's event fractions even when it never reduces, so the
    # full and from-scratch arms are timed over the same steps as the in-training ones
    event_steps = ReductionSchedule(fractions=spec.event_fractions).event_steps(spec.steps)
    steps, cpu = probe.step_seconds, probe.step_cpu

    def median(values: dict[int, float], after: bool) -> float | None:
        kept = [v for s, v in values.items()
                if (s > event_steps[-1] + 1 if after else s <= event_steps[0])]
        return float(np.median(kept)) if kept else None

    final_dims = list(result.dims_final)
    at_final = [e for e in probe.evals if e["dims"] == final_dims]
    best = max(at_final, key=lambda e: (e["val_acc"], e["step"])) if at_final else None
    return {
        "spec": spec.to_dict(),
        "threads": result.threads,
        "dims_initial": list(result.dims_initial),
        "dims_final": final_dims,
        "test_acc": probe.evals[-1]["test_acc"],
        "best_val_test_acc": best["test_acc"] if best else None,
        "best_val_step": best["step"] if best else None,
        "evals": probe.evals,
        "wall_s": result.seconds - probe.excluded,
        "end_to_end_s": end_to_end,
        "harness_s": probe.excluded,
        # CPU seconds of the loop: the per-step CPU times, step 1 (unmeasured) taken as step 2
        "cpu_s": sum(cpu.values()) + cpu.get(2, 0.0),
        "step_s_before": median(steps, after=False),
        "step_s_after": median(steps, after=True),
        "cpu_step_s_before": median(cpu, after=False),
        "cpu_step_s_after": median(cpu, after=True),
        "step_s": [round(steps[s], 6) if s in steps else None for s in range(1, spec.steps + 1)],
        "events": [{
            "step": e.step, "dims_before": list(e.dims_before), "dims_after": list(e.dims_after),
            "bounds": {b: v.bound for b, v in e.blocks.items()},
            "reduce_s": e.seconds,
            "passes_s": probe.pass_seconds.get(e.step, {}),
            "next_step_s": steps.get(e.step + 1),
            "next_step_cpu_s": cpu.get(e.step + 1),
        } for e in events],
        "skipped": [record_to_json(r) for r in of_kind(result.metrics, SkippedRecord)],
    }


def runs_wall_s(runs: dict[str, list[dict]]) -> float:
    """Wall seconds the runs took when they were trained (training, setup and the harness's
    evaluations), whether this invocation trained them or found them finished."""
    return sum(r["end_to_end_s"] + r["harness_s"] for records in runs.values() for r in records)


# ---- statistics -----------------------------------------------------------------------------


def stats(values: list[float], top: int = 3) -> dict[str, Any]:
    """mean, sample std, mean of the ``top`` best (the paper's top-3 protocol), and the values:
    ``paired.summarise`` as the JSON the older experiments write."""
    s = summarise_values(values, top)
    return {"mean": s.mean, "std": s.std, "top3": s.top3, "values": list(s.values), "n": s.n}


# ---- command line ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def run_script(run: Callable[[Any], Any], args: Any) -> int:
    """Run an experiment; our errors become one line on stderr and exit code 2."""
    try:
        run(args)
    except SSMCompileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def base_parser(doc: str):
    """The options every experiment script shares."""
    import argparse

    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.strip().splitlines()[1:]))
    p.add_argument("--quick", action="store_true", help="tiny CI-sized smoke run")
    p.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    p.add_argument("--steps", type=int, help="optimizer steps per run")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "experiments",
                   help="run directories (cache shared by all experiments)")
    p.add_argument("--results", type=Path, default=REPO / "docs" / "results",
                   help="where the result JSON and PNG files go")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=quiet, dynamic_ncols=True)


def set_threads(threads: int) -> int:
    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return torch.get_num_threads()


__all__ = ["ArmSpec", "TimedPass", "Probe", "run_arm", "load_result", "summarise", "stats",
           "dataset_sizes", "runs_wall_s", "write_json", "set_threads", "base_parser", "progress",
           "PAPER_EVENTS", "REPO"]
