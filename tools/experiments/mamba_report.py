"""The README's Mamba-2 section, from the per-seed files of ``campaign_m.py``
(``docs/results/runs/m/seed<N>.json``); called by ``report.py``.

Per seed: validation perplexity of the three arms and the interleaved step-time ratio. Targets
(the issue's): ≥ 5× faster steps, perplexity within 1 % of full, better than from scratch at 12
in most seeds; judged only once ``MIN_SEEDS`` seeds exist.
"""

from __future__ import annotations

import json
from pathlib import Path

from campaign_report import MIN_SEEDS
from paired import summarise

SPEED_TARGET, PPL_TARGET = 5.0, 1.01


def load_seeds(results: Path, experiment: str = "m") -> list[dict]:
    """The readable seed files of the newest recipe (the one most files share)."""
    records = []
    for path in sorted((results / "runs" / experiment).glob("seed*.json")):
        try:
            data = json.loads(path.read_text())
            by = {r["arm"]: r for r in data["report"]["results"]}
            records.append({"seed": data["seed"], "recipe": data["recipe_hash"],
                            "full": by["full"]["val_ppl"], "reduced": by["reduced"]["val_ppl"],
                            "scratch": by["scratch"]["val_ppl"],
                            "speedup": data["report"]["speedup_interleaved"],
                            "ms": data["report"]["interleaved_step_ms"],
                            "energy": min(by["reduced"]["energy_kept"]),
                            "threads": data["report"]["threads"], "args": data["recipe"]})
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    if not records:
        return []
    counts: dict[str, int] = {}
    for r in records:
        counts[r["recipe"]] = counts.get(r["recipe"], 0) + 1
    recipe = max(counts, key=counts.get)
    return sorted((r for r in records if r["recipe"] == recipe), key=lambda r: r["seed"])


def _status(ok: bool, n: int) -> str:
    return "not enough seeds yet" if n < MIN_SEEDS else ("met" if ok else "missed")


def mamba_section(results: Path) -> list[str]:
    seeds = load_seeds(results)
    if not seeds:
        return []
    args = seeds[0]["args"]
    steps = args[args.index("--steps") + 1] if "--steps" in args else "?"
    lines = [f"### M′. Mamba-2 char-LM, d_state 128 → 12 during training: {len(seeds)} seed(s)",
             "", "Generated from `docs/results/runs/m/` (`tools/experiments/campaign_m.py`, "
             f"the `tools/bench_mamba.py` arms, {steps} steps, event at 10 %, "
             f"{seeds[0]['threads']} thread). Perplexity on fixed validation windows; the step "
             "ratio is measured with the final full and reduced models taking turns step by "
             "step.", "",
             "| seed | ppl full | ppl reduced | ppl scratch @ 12 | reduced / full | "
             "scratch / reduced | step ms full / reduced | × faster | energy kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in seeds:
        lines.append(f"| {r['seed']} | {r['full']:.3f} | {r['reduced']:.3f} | "
                     f"{r['scratch']:.3f} | {r['reduced'] / r['full']:.4f} | "
                     f"{r['scratch'] / r['reduced']:.4f} | {r['ms']['full']:.1f} / "
                     f"{r['ms']['reduced']:.1f} | {r['speedup']:.2f} | {r['energy']:.3f} |")
    ratio = summarise(r["reduced"] / r["full"] for r in seeds)
    speed = summarise(r["speedup"] for r in seeds)
    wins = sum(r["reduced"] < r["scratch"] for r in seeds)
    within = sum(r["reduced"] / r["full"] <= PPL_TARGET for r in seeds)
    n = len(seeds)
    lines += ["", f"Targets (judged at ≥ {MIN_SEEDS} seeds):", "",
              f"- ≥ {SPEED_TARGET:.0f}× faster steps: "
              f"**{_status(speed.mean >= SPEED_TARGET, n)}** — "
              f"{speed.mean:.2f} ± {speed.std:.2f}×",
              f"- perplexity within {100 * (PPL_TARGET - 1):.0f} % of full: "
              f"**{_status(ratio.mean <= PPL_TARGET, n)}** — reduced / full "
              f"{ratio.mean:.4f} ± {ratio.std:.4f} (within in {within} of {n} seeds)",
              f"- better than from scratch at 12 in most seeds: "
              f"**{_status(2 * wins > n, n)}** — {wins} of {n}"]
    return lines
