"""Rebuild README.md's results section from the experiments' JSON files.

Rewrites exactly the text between ``<!-- results:start -->`` and ``<!-- results:end -->``
(atomically); everything else in the README is left byte for byte. Experiments whose JSON is
missing are left out. Targets are checked against the paper's claims and printed as measured.

    python tools/experiments/report.py                 # docs/results/*.json → README.md
    python tools/experiments/report.py --stdout        # print the section instead
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_report import campaign_section  # noqa: E402
from common import REPO  # noqa: E402
from mamba_report import mamba_section  # noqa: E402
from perf_report import performance_section  # noqa: E402
from rollback_demo import rollback_section  # noqa: E402

from ssmcompile.io import write_bytes_atomic  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"
WALL_TARGET, ACC_TARGET, OVERHEAD_TARGET = 0.55, 0.5, 0.01


class ReportError(Exception):
    """The README or a results file is not what the report needs."""


def _pm(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    if s is None or s.get("mean") is None:
        return "–"
    if s["n"] <= 1:
        return f"{scale * s['mean']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def _num(s: dict, digits: int = 3) -> str:
    return "–" if s.get("mean") is None else f"{s['mean']:.{digits}f}"


def _dims(arm: dict) -> str:
    per_block = list(zip(*arm["dims_final"], strict=True))
    if len(per_block) == 1:
        return _pm(arm["total_dim"], digits=0)
    means = "/".join(f"{sum(b) / len(b):.0f}" for b in per_block)
    return f"{means} (Σ {arm['total_dim']['mean']:.0f})"


def _load(arms: list[dict]) -> float:
    values = [v for a in arms for v in a["load_avg"]["values"]]
    return sum(values) / len(values)


def _diff(a: dict, b: dict) -> tuple[float, float]:
    """Difference of mean accuracies in points, and its standard error."""
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return 100 * (a["mean"] - b["mean"]), 100 * se


def _signed(value: float) -> str:
    return f"{value:+.1f}".replace("-", "−")


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌ missed"


PAPER = {  # the paper's figures for the setting each experiment scales down (REFERENCE.md)
    "A": "sMNIST (L = 784), 200k steps: full 97.3 %; τ = 0.01 → n ≈ 47, 96.9 %; "
         "τ = 0.02 → n ≈ 28, 96.9 %; τ = 0.04 → n ≈ 13, 95.9 %",
    "B": "sCIFAR, 6 blocks, H = 512, n₀ = 384: full 86.5 %; τ = 0.10 → n ≈ 93, 85.7 % "
         "(from scratch at that size 81.8 %); training up to 1.5× faster on image tasks",
}


def training_notes(data: dict, name: str) -> list[str]:
    """What the columns mean, and the scale the figures come from (no conclusions here)."""
    s, d = data["settings"], data.get("data", {})
    n_test = d.get("test")
    grain = f", so one sequence is {100 / n_test:.2f} pt" if n_test else ""
    return [
        f"Paper, for comparison: {PAPER[name]}. Here: {d.get('name', '?')} (L = "
        f"{d.get('seq_len', '?')}, {d.get('train', '?')} training / {n_test or '?'} test "
        f"sequences{grain}), {s['steps']} steps per run, so the four events fall within the "
        f"first {round(0.1 * s['steps'])} steps.",
        "",
        "Wall time is the training loop (every step and every reduction event, the verify "
        "pass included), without the harness's own evaluations; CPU is this process's CPU "
        "time over the same steps, which other users' load on the shared machine barely "
        "changes. Accuracy is the final model's test accuracy; top-3 mean is the paper's "
        "protocol (best 3 seeds); test @ best val is the test accuracy at the best validation "
        "point of the final size.",
        "",
    ]


def training_section(data: dict, images: str, name: str) -> list[str]:
    s, env = data["settings"], data["environment"]
    arms = data["arms"]
    lines = training_notes(data, name) + [
        "| arm | final state dim | test acc % (mean ± std) | top-3 mean | test @ best val "
        "| wall s | × full | CPU s | × full (CPU) | s/step before → after last event "
        "(wall; CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        lines.append(
            f"| {a['arm']} | {_dims(a)} | {_pm(a['test_acc'], 100)} | "
            f"{100 * a['test_acc']['top3']:.1f} | {_pm(a['best_val_test_acc'], 100)} | "
            f"{_pm(a['wall_s'])} | {_pm(a['wall_ratio'], digits=2)} | {_pm(a['cpu_s'])} | "
            f"{_pm(a['cpu_ratio'], digits=2)} | {_num(a['step_s_before'])} → "
            f"{_num(a['step_s_after'])}; {_num(a['cpu_step_s_before'])} → "
            f"{_num(a['cpu_step_s_after'])} |")
    full = next(a for a in arms if a["kind"] == "full")
    lines += ["", f"Targets (n = {full['test_acc']['n']} seeds; ± is the standard error of "
                  "the difference):", ""]
    for a in (a for a in arms if a["kind"] == "in-training"):
        scratch = next((b for b in arms if b["kind"] == "scratch" and b["params"] == a["params"]),
                       None)
        ratio = a["wall_ratio"]["mean"]
        d_full, se_full = _diff(a["test_acc"], full["test_acc"])
        parts = [f"wall ×{ratio:.2f} of full (≤ {WALL_TARGET}: {_mark(ratio <= WALL_TARGET)}; "
                 f"CPU ×{a['cpu_ratio']['mean']:.2f})",
                 f"accuracy {_signed(d_full)} ± {se_full:.1f} pt vs full "
                 f"(≥ −{ACC_TARGET}: {_mark(d_full >= -ACC_TARGET)})"]
        if scratch is not None:
            d_s, se_s = _diff(a["test_acc"], scratch["test_acc"])
            parts.append(f"{_signed(d_s)} ± {se_s:.1f} pt vs from scratch at the same dims "
                         f"(> 0: {_mark(d_s > 0)})")
        lines.append(f"- **{a['arm']}**: " + "; ".join(parts))
    lines += ["", f"![{name} accuracy vs final state dimension]({images}/exp_"
                  f"{name.lower()}_accuracy.png) "
                  f"![{name} wall time vs accuracy]({images}/exp_{name.lower()}_walltime.png)",
              "", f"<sub>{s['steps']} steps, batch {s['batch_size']}, lr {s['lr']} (AdamW, "
                  f"warm-up 10 %, cosine), 4 events at 2.5/5/7.5/10 % of the steps, seeds "
                  f"{', '.join(map(str, s['seeds']))}, {env['threads']} thread, torch "
                  f"{env['torch']}, {env['cpus']} CPUs, mean load average during the runs "
                  f"{_load(arms):.1f}; the runs took {data['runs_wall_s'] / 60:.1f} min of "
                  "wall time.</sub>"]
    return lines


def stability_section(data: dict, images: str) -> list[str]:
    agg = data["aggregate"]
    taus = list(agg["taus"])
    head = "| step | % of training | Kendall τ | " + " | ".join(
        f"τ={t} (r={agg['taus'][t]['rank_at_end']['mean']:.0f}, chance "
        f"{agg['taus'][t]['chance']:.2f}): top-r / subspace" for t in taus) + " |"
    lines = [
        "Experiment A's full runs (never reduced, so mode i stays mode i), read at step 1, at "
        "the four event steps and later, each compared with the end of training. r is the τ "
        "rule's rank on the final spectrum. Kendall τ: rank correlation of the modes' Hankel "
        "scores ‖b_i‖‖c_i‖/(1−|λ_i|²); top-r: share of the final top-r modes already in the "
        "top r; subspace: mean cos² of the principal angles between the state subspaces "
        "balanced truncation keeps (1 = same, chance = r/n). Means over seeds.",
        "", head, "|---|---|---|" + "---|" * len(taus)]
    for i, step in enumerate(agg["steps"]):
        cells = " | ".join(f"{agg['taus'][t]['topr_overlap'][i]['mean']:.2f} / "
                           f"{agg['taus'][t]['subspace_overlap'][i]['mean']:.2f}" for t in taus)
        lines.append(f"| {step} | {100 * step / data['steps_total']:.1f} | "
                     f"{agg['kendall'][i]['mean']:+.2f} | {cells} |")
    lines += ["", f"![rank stability over training]({images}/exp_c_stability.png)"]
    return lines


def _twin(row: dict) -> str:
    same = row.get("same_model_as_with_verify")
    if same is None:
        return ""
    return " (same model as with verify)" if same else " (⚠ model differs from with verify)"


def overhead_section(data: dict, images: str) -> list[str]:
    lines = ["Seconds per run, summed over its events (mean over seeds). analysis: "
             "`hankel-analysis`; rewrite: `balanced-truncation`; rest: the event's capture, "
             "matching and optimizer surgery; first step: the first step at the new size beyond "
             "a normal one (re-wrapping; recompiling when torch.compile is on — off here, as "
             "the trainer's default on CPU). overhead = these four as a share of the run's wall "
             "time (target ≤ 1 %); verify is listed apart. The event cost is fixed while "
             "training time grows with the steps: the projection is the run length at which it "
             "would fall to 1 %, at the reduced model's step time. \"no verify\" runs repeat "
             "the arm without the `verify` pass (the paper's pipeline).", "",
             "| run | events | analysis s | rewrite s | rest s | first step s | overhead "
             "| verify s | with verify | steps for ≤ 1 % (projected) | wall × full "
             "| CPU × full |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        p = r["parts_s"]
        frac = r["fraction"]["mean"]
        lines.append(
            f"| {r['arm']} | {r['events']['mean']:.0f} | {p['analysis']['mean']:.2f} | "
            f"{p['rewrite']['mean']:.2f} | {p['rest']['mean']:.2f} | "
            f"{p['first_step']['mean']:.2f} | {100 * frac:.2f} % of "
            f"{r['wall_s']['mean']:.1f} s {_mark(frac <= OVERHEAD_TARGET)} | "
            f"{p['verify']['mean']:.2f} | {100 * r['fraction_with_verify']['mean']:.2f} % | "
            f"{r['steps_for_1pct']['mean']:.0f} (ran {r['steps']}) | "
            f"{_pm(r['wall_ratio'], digits=2)} | {_pm(r['cpu_ratio'], digits=2)}{_twin(r)} |")
    lines += ["", f"![overhead by part]({images}/exp_d_overhead.png)"]
    return lines


SECTIONS = (
    ("exp_a.json", "A. Sequential digits, one LRU block (the sMNIST table, scaled)",
     lambda d, i: training_section(d, i, "A")),
    ("exp_b.json", "B. Several LRU blocks: per-block ranks vs one global budget",
     lambda d, i: training_section(d, i, "B")),
    ("exp_c.json", "C. Rank stability of the Hankel singular values", stability_section),
    ("exp_d.json", "D. Overhead of the reduction events", overhead_section),
)


def build_section(results: Path, readme_dir: Path) -> str:
    images = Path(os.path.relpath(results, readme_dir)).as_posix()
    lines = ["", "_Generated by `python tools/experiments/report.py` from "
                 f"`{images}/*.json` — do not edit by hand. Every figure below was measured "
                 "by the scripts in `tools/experiments/` in one harness run on this project's "
                 "shared 2-core CPU VMs (the arms of one seed back to back, so they share the "
                 "machine's load); ratios are per seed against that seed's full run._", ""]
    found = 0
    for filename, title, render in SECTIONS:
        path = results / filename
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
            body = render(data, images)
        except (json.JSONDecodeError, KeyError, TypeError, StopIteration) as err:
            raise ReportError(f"{path}: not a results file of this harness ({err!r})") from None
        found += 1
        lines += [f"### {title}", ""]
        if data.get("quick"):
            lines += ["**Quick smoke-test figures (`--quick`), not results.**", ""]
        lines += body + [""]
    campaign = campaign_section(results)
    mamba = mamba_section(results)
    campaign += ([""] if campaign and mamba else []) + mamba
    rollback = rollback_section(results)
    campaign += ([""] if campaign and rollback else []) + rollback
    lines += campaign + ([""] if campaign else [])
    try:
        perf = performance_section(results)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReportError(f"{results}: a bench_*.json is not a benchmark file ({err!r})") from None
    if not found and not campaign and not perf:
        raise ReportError(f"no exp_*.json results in {results}")
    return "\n".join(lines + perf)


def replace_section(readme: Path, section: str) -> None:
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as err:
        raise ReportError(f"cannot read {readme}: {err.strerror or err}") from None
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ReportError(f"{readme} needs exactly one {START} … {END} pair")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    write_bytes_atomic(readme, (head + START + section + END + tail).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--results", type=Path, default=REPO / "docs" / "results")
    p.add_argument("--readme", type=Path, default=REPO / "README.md")
    p.add_argument("--stdout", action="store_true", help="print the section, write nothing")
    args = p.parse_args(argv)
    try:
        section = build_section(args.results, args.readme.resolve().parent)
        if args.stdout:
            print(section)
        else:
            replace_section(args.readme, section)
            print(f"rewrote the results section of {args.readme}")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
