"""Experiment M with seeds: the Mamba-2 char-LM, d_state 128 → 12 during training.

Each seed runs ``tools/bench_mamba.py``'s three arms (full 128, from scratch at 12, reduced
128 → 12 at 10 % of the steps) with the recipe below and writes its whole report to
``docs/results/runs/m/seed<N>.json`` as soon as it ends; a rerun skips seeds whose file holds
the same recipe hash, so the campaign resumes anywhere. ``report.py`` renders the section.

Recipe: bench_mamba's architecture and optimizer (d_model 32, 2 layers, head dim 16, AdamW
lr 3e-3, warm-up 10 % then cosine, batch 8 × 128 characters), 2,000 steps (5× the bench's
default), 1 thread. The step-time ratio is the bench's interleaved one: the final full and
reduced models take turns step by step after training, so load changes hit both alike.

    python tools/experiments/campaign_m.py --seeds 5
    python tools/experiments/campaign_m.py --quick --results /tmp/o
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_mamba  # noqa: E402
from common import REPO  # noqa: E402
from runstore import campaign_parser, spec_hash  # noqa: E402

from ssmcompile.io import write_bytes_atomic  # noqa: E402

RECIPE = ["--structure", "mamba2", "--d-model", "32", "--layers", "2", "--head-dim", "16",
          "--d-state", "128", "--rank", "12", "--steps", "2000", "--batch", "8",
          "--length", "128", "--lr", "3e-3", "--event-frac", "0.1", "--threads", "1",
          "--timing-steps", "24"]
QUICK = ["--quick", "--threads", "1"]


def run_file(results: Path, experiment: str, seed: int) -> Path:
    return results / "runs" / experiment / f"seed{seed}.json"


def load_done(path: Path, recipe_hash: str) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("recipe_hash") == recipe_hash else None


def run_seed(recipe: list[str], seed: int, path: Path) -> dict:
    """One seed's three arms; the file is written only once the whole report exists."""
    args = bench_mamba.parse([*recipe, "--seed", str(seed)])
    start = time.perf_counter()
    report = bench_mamba.run(args)
    record = {"experiment": path.parent.name, "seed": seed, "recipe": recipe,
              "recipe_hash": spec_hash(recipe), "wall_s": time.perf_counter() - start,
              "report": report}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(record, indent=1) + "\n").encode())
    return record


def main(argv: list[str] | None = None) -> int:
    p = campaign_parser(__doc__)
    p.add_argument("--results", type=Path, default=REPO / "docs" / "results")
    args = p.parse_args(argv)
    recipe, experiment = (QUICK, "m-quick") if args.quick else (RECIPE, "m")
    for seed in range(args.first_seed, args.seeds):
        path = run_file(args.results, experiment, seed)
        if load_done(path, spec_hash(recipe)) is not None:
            print(f"seed {seed}: done ({path.name})", flush=True)
            continue
        record = run_seed(recipe, seed, path)
        print(f"[{time.strftime('%H:%M:%S')}] seed {seed}: written {path} "
              f"({record['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
