"""The README demo (``make demo``): train an LRU on sequential digits and shrink it while it trains.

Sequential 8×8 digits (L = 64, bundled with scikit-learn — nothing is downloaded), one LRU
block with H = 48 and n = 96 states, 1,000 AdamW steps. Four reduction events in the first 10 %
of training balanced-truncate the block at energy τ = 0.1, each on the already reduced system.
Then the same run without reduction, for comparison (``--no-baseline`` skips it). Prints each
event, validation accuracy along the way, and a summary table.

    python examples/demo.py [--steps 1000] [--threads 1] [--out DIR] [--tau 0.1] [--no-baseline]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from ssmcompile.train.config import TrainConfig, default_pipeline
from ssmcompile.train.presets import get_preset
from ssmcompile.train.records import EvalRecord, ReductionRecord, TrainRecord, of_kind
from ssmcompile.train.result import TrainResult
from ssmcompile.train.schedule import ReductionSchedule
from ssmcompile.train.trainer import Trainer


def run(config: TrainConfig, out: str | None) -> TrainResult:
    with tempfile.TemporaryDirectory(prefix="ssmcompile-demo-") as tmp:
        return Trainer(config.replace(out_dir=out or tmp)).fit()


def speed(result: TrainResult, after: int = 0) -> float:
    rates = [r.steps_per_s for r in of_kind(result.metrics, TrainRecord) if r.step > after]
    return statistics.median(rates) if rates else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's 1000")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", help="keep checkpoints, metrics.jsonl and plots here")
    parser.add_argument("--tau", type=float, default=None, help="default: the preset's 0.1")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unreduced run")
    args = parser.parse_args()

    config = get_preset("lru-digits").replace(threads=args.threads)
    if args.steps is not None:
        config = config.replace(steps=args.steps)
    if args.tau is not None:
        config = config.replace(pipeline=default_pipeline(args.tau))
    print(f"training one LRU block (H={config.model.d_model}, n={config.model.state_dim}) "
          f"on sequential digits for {config.steps} steps, {config.threads} thread(s)")
    print(f"pipeline at each event: {config.pipeline}\n")
    result = run(config, args.out)

    print("reduction events")
    for r in of_kind(result.metrics, ReductionRecord):
        for name, block in r.blocks.items():
            bound = "measured" if block.bound is None else f"2·Σtail = {block.bound:.3g}"
            print(f"  step {r.step:5d}  {name}  n {block.n:3d} → {block.r:3d}   "
                  f"bound {bound}   ({r.seconds:.2f} s)")
    print("\nvalidation accuracy (evaluated before that step's event)")
    for r in of_kind(result.metrics, EvalRecord):
        print(f"  step {r.step:5d}  state dims {r.dims}  accuracy {100 * r.val_acc:.1f} %")
    print("\nsummary")
    print(result.summary())

    if not args.no_baseline:
        print("\nthe same run without reduction, for comparison …")
        full = run(config.replace(schedule=ReductionSchedule.never()), None)
        last_event = max((e.step for e in result.history), default=0)
        rows = [("", "reduced during training", "never reduced"),
                ("state dims", f"{result.dims_initial} → {result.dims_final}",
                 str(full.dims_final)),
                ("val accuracy (final)", f"{100 * result.val_acc:.1f} %",
                 f"{100 * full.val_acc:.1f} %"),
                ("test accuracy (final)", f"{100 * result.test_acc:.1f} %",
                 f"{100 * full.test_acc:.1f} %"),
                ("training time", f"{result.seconds:.1f} s", f"{full.seconds:.1f} s"),
                ("steps/s after the last event", f"{speed(result, last_event):.1f}",
                 f"{speed(full, last_event):.1f}")]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                        for r in rows))
        print(f"({config.threads} thread(s), same seed, data order and schedule of the LR)")
    if args.out:
        print(f"\ncheckpoints, metrics.jsonl and plots of the reduced run in {args.out}")


if __name__ == "__main__":
    main()
