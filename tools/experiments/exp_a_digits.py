"""Experiment A: the paper's sMNIST table at CPU scale (1 LRU block, H = 8, n0 = 256).

Sequential digits upsampled to 16×16 (L = 256), or MNIST (L = 784) with --mnist DIR. Arms per
seed, run back to back: full (n = 256 throughout), in-training reduction at each τ (4 events
inside the first 10 % of steps, the paper's schedule, τ re-applied at each event), and from
scratch at each in-training run's final dimension. Writes exp_a.json, exp_a_accuracy.png and
exp_a_walltime.png to --results; the full runs also record the HSV snapshots experiment C uses.

    python tools/experiments/exp_a_digits.py               # the committed figures
    python tools/experiments/exp_a_digits.py --quick --runs /tmp/r --results /tmp/o
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aggregate import (  # noqa: E402
    arm_summary,
    environment,
    plot_accuracy_vs_dim,
    plot_wall_vs_accuracy,
)
from common import (  # noqa: E402
    PAPER_EVENTS,
    ArmSpec,
    base_parser,
    dataset_sizes,
    progress,
    run_arm,
    run_script,
    runs_wall_s,
    set_threads,
    write_json,
)

SNAPSHOT_FRACTIONS = (0.15, 0.2, 0.3, 0.5, 0.75)  # besides step 1, the events and the end


@dataclass(frozen=True)
class Settings:
    """The sizes of one experiment-A campaign (see ``settings`` for the two presets)."""

    n0: int
    d_model: int
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    seeds: tuple[int, ...]
    taus: tuple[float, ...]
    upsample: bool
    threads: int
    dataset: str = "digits"
    data_path: str | None = None

    def pipeline(self, tau: float) -> str:
        return f"hankel-analysis,balanced-truncation{{tau={tau}}},verify"

    def snapshot_steps(self) -> tuple[int, ...]:
        fractions = PAPER_EVENTS + SNAPSHOT_FRACTIONS
        steps = {1, self.steps} | {max(1, round(f * self.steps)) for f in fractions}
        return tuple(sorted(steps))

    def arm(self, arm: str, seed: int, dims: tuple[int, ...], **changes) -> ArmSpec:
        return ArmSpec(experiment="a", arm=arm, seed=seed, state_dims=dims,
                       d_model=self.d_model, steps=self.steps, batch_size=self.batch_size,
                       lr=self.lr, eval_every=self.eval_every, upsample=self.upsample,
                       dataset=self.dataset, data_path=self.data_path, threads=self.threads,
                       **changes)


def settings(args) -> Settings:
    """Full: sized so A–D together fit the 45-minute budget on 2 shared cores (see README)."""
    if args.quick:
        s = Settings(n0=16, d_model=4, steps=16, batch_size=16, lr=4e-3, eval_every=8,
                     seeds=(0,), taus=(0.04,), upsample=False, threads=args.threads)
    else:
        s = Settings(n0=256, d_model=8, steps=500, batch_size=32, lr=4e-2, eval_every=50,
                     seeds=(0, 1, 2), taus=(0.01, 0.02, 0.04), upsample=True,
                     threads=args.threads)
    changes = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.steps is not None:
        changes["steps"] = args.steps
        changes["eval_every"] = max(1, args.steps // 10)
    if getattr(args, "mnist", None):
        changes.update(dataset="mnist", data_path=str(args.mnist), upsample=False)
    return Settings(**{**s.__dict__, **changes})


def full_arm(s: Settings, seed: int) -> ArmSpec:
    """The n0 baseline; it also records the HSV snapshots of experiment C."""
    return s.arm("full", seed, (s.n0,), snapshot_steps=s.snapshot_steps())


def in_training_arm(s: Settings, seed: int, tau: float) -> ArmSpec:
    return s.arm(f"in-training tau={tau}", seed, (s.n0,), pipeline=s.pipeline(tau))


def scratch_arm(s: Settings, seed: int, tau: float, dims: tuple[int, ...]) -> ArmSpec:
    return s.arm(f"scratch tau={tau}", seed, tuple(dims))


def run(args) -> dict:
    threads = set_threads(args.threads)
    s = settings(args)
    runs: dict[str, list[dict]] = {}
    bar = progress(len(s.seeds) * (1 + 2 * len(s.taus)), "experiment A", args.quiet)
    start = time.perf_counter()
    for seed in s.seeds:  # one seed's arms back to back: they share the machine's load
        specs = [full_arm(s, seed)] + [in_training_arm(s, seed, t) for t in s.taus]
        for spec in specs:
            bar.set_postfix_str(f"{spec.arm} seed {seed}")
            runs.setdefault(spec.arm, []).append(run_arm(spec, args.runs, s.taus))
            bar.update(1)
        for tau in s.taus:
            reduced = runs[f"in-training tau={tau}"][-1]
            spec = scratch_arm(s, seed, tau, tuple(reduced["dims_final"]))
            bar.set_postfix_str(f"{spec.arm} seed {seed}")
            runs.setdefault(spec.arm, []).append(run_arm(spec, args.runs))
            bar.update(1)
    bar.close()
    full = {r["spec"]["seed"]: r for r in runs["full"]}
    arms = [arm_summary("full", "full", runs["full"], full)]
    for tau in s.taus:
        arms.append(arm_summary(f"in-training τ={tau}", "in-training",
                                runs[f"in-training tau={tau}"], full, tau=tau))
    for tau in s.taus:
        arms.append(arm_summary(f"scratch (τ={tau} dims)", "scratch", runs[f"scratch tau={tau}"],
                                full, tau=tau))
    result = {"experiment": "A", "title": "1 LRU block, H = 8, sequential digits",
              "quick": bool(args.quick), "settings": s.__dict__,
              "data": dataset_sizes(s.arm("full", 0, (s.n0,))), "environment":
              environment(threads), "harness_wall_s": time.perf_counter() - start,
              "runs_wall_s": runs_wall_s(runs), "arms": arms}
    out = Path(args.results)
    write_json(out / "exp_a.json", result)
    title = f"A: 1 LRU block, n0={s.n0}, {s.steps} steps, {len(s.seeds)} seeds"
    plot_accuracy_vs_dim(arms, out / "exp_a_accuracy.png", title, threads)
    plot_wall_vs_accuracy(arms, out / "exp_a_walltime.png", title, threads)
    for a in arms:
        print(f"{a['arm']:<26} dims {a['total_dim']['mean']:7.1f}  test "
              f"{100 * a['test_acc']['mean']:5.1f} ± {100 * a['test_acc']['std']:4.1f} %  "
              f"wall {a['wall_s']['mean']:6.1f} s  ×{a['wall_ratio']['mean']:.2f} of full  "
              f"[{threads} thread]")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--mnist", type=Path, help="directory of MNIST IDX files (L = 784)")
    args = parser.parse_args(argv)
    return run_script(run, args)


if __name__ == "__main__":
    sys.exit(main())
