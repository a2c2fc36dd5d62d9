"""Experiment B: a multi-block LRU model (the sCIFAR setting scaled down), per-block ranks
against one global budget.

The paper's deep model (BatchNorm → LRU → GELU → GLU, residual) with several blocks on
sequential 8×8 digits (L = 64). Arms per seed, back to back: full; in-training with the energy
rule per block (each block its own rank, τ re-applied at each of the 4 events); in-training with
a global budget (``balanced-truncation{budget=b}``: one threshold on per-block normalised HSVs
keeps a fraction b of all states at each event, so about b⁴ after 4 events); and from scratch
at each in-training run's final per-block dims. Writes exp_b.json and two PNGs to --results.

    python tools/experiments/exp_b_multiblock.py
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


@dataclass(frozen=True)
class Settings:
    n_blocks: int
    n0: int
    d_model: int
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    seeds: tuple[int, ...]
    tau: float
    budget: float
    upsample: bool
    threads: int

    def arm(self, arm: str, seed: int, dims: tuple[int, ...], **changes) -> ArmSpec:
        return ArmSpec(experiment="b", arm=arm, seed=seed, state_dims=dims,
                       d_model=self.d_model, steps=self.steps, batch_size=self.batch_size,
                       lr=self.lr, eval_every=self.eval_every, upsample=self.upsample,
                       threads=self.threads, **changes)

    def reducing_arms(self) -> dict[str, tuple[str, dict[str, float]]]:
        """arm name → (pipeline, the rank rule's parameter)."""
        rules = {"tau": self.tau, "budget": self.budget}
        return {f"in-training {k}={v}":
                (f"hankel-analysis,balanced-truncation{{{k}={v}}},verify", {k: v})
                for k, v in rules.items()}


def settings(args) -> Settings:
    if args.quick:
        s = Settings(n_blocks=2, n0=8, d_model=4, steps=16, batch_size=16, lr=4e-3,
                     eval_every=8, seeds=(0,), tau=0.04, budget=0.7, upsample=False,
                     threads=args.threads)
    else:
        s = Settings(n_blocks=3, n0=128, d_model=16, steps=500, batch_size=32, lr=2e-2,
                     eval_every=50, seeds=(0, 1, 2, 3), tau=0.02, budget=0.7, upsample=False,
                     threads=args.threads)
    changes = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.steps is not None:
        changes.update(steps=args.steps, eval_every=max(1, args.steps // 10))
    return Settings(**{**s.__dict__, **changes})


def run(args) -> dict:
    threads = set_threads(args.threads)
    s = settings(args)
    reducing = s.reducing_arms()
    bar = progress(len(s.seeds) * (1 + 2 * len(reducing)), "experiment B", args.quiet)
    runs: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for seed in s.seeds:
        specs = [s.arm("full", seed, (s.n0,) * s.n_blocks)]
        specs += [s.arm(name, seed, (s.n0,) * s.n_blocks, pipeline=p)
                  for name, (p, _) in reducing.items()]
        for spec in specs:
            bar.set_postfix_str(f"{spec.arm} seed {seed}")
            runs.setdefault(spec.arm, []).append(run_arm(spec, args.runs))
            bar.update(1)
        for name in reducing:
            dims = tuple(runs[name][-1]["dims_final"])
            spec = s.arm(name.replace("in-training", "scratch"), seed, dims)
            bar.set_postfix_str(f"{spec.arm} seed {seed}")
            runs.setdefault(spec.arm, []).append(run_arm(spec, args.runs))
            bar.update(1)
    bar.close()
    full = {r["spec"]["seed"]: r for r in runs["full"]}
    arms = [arm_summary("full", "full", runs["full"], full)]
    for name, (_, params) in reducing.items():
        arms.append(arm_summary(name.replace("tau=", "τ="), "in-training", runs[name], full,
                                **params))
    for name, (_, params) in reducing.items():
        rule = name.replace("in-training ", "").replace("tau=", "τ=")
        arms.append(arm_summary(f"scratch ({rule} dims)", "scratch",
                                runs[name.replace("in-training", "scratch")], full, **params))
    result = {"experiment": "B", "title": f"{s.n_blocks} LRU blocks, H = {s.d_model}, "
              f"sequential digits", "quick": bool(args.quick), "settings": s.__dict__,
              "data": dataset_sizes(s.arm("full", 0, (s.n0,) * s.n_blocks)),
              "environment": environment(threads),
              "harness_wall_s": time.perf_counter() - start,
              "runs_wall_s": runs_wall_s(runs), "arms": arms}
    out = Path(args.results)
    write_json(out / "exp_b.json", result)
    title = f"B: {s.n_blocks} LRU blocks, n0={s.n0} each, {s.steps} steps, {len(s.seeds)} seeds"
    plot_accuracy_vs_dim(arms, out / "exp_b_accuracy.png", title, threads)
    plot_wall_vs_accuracy(arms, out / "exp_b_walltime.png", title, threads)
    for a in arms:
        dims = "/".join(f"{sum(d[i] for d in a['dims_final']) / len(a['dims_final']):.0f}"
                        for i in range(s.n_blocks))
        print(f"{a['arm']:<30} dims {dims:<12} test {100 * a['test_acc']['mean']:5.1f} ± "
              f"{100 * a['test_acc']['std']:4.1f} %  wall {a['wall_s']['mean']:6.1f} s  "
              f"×{a['wall_ratio']['mean']:.2f} of full  [{threads} thread]")
    return result


def main(argv: list[str] | None = None) -> int:
    args = base_parser(__doc__).parse_args(argv)
    return run_script(run, args)


if __name__ == "__main__":
    sys.exit(main())
