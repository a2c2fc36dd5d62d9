"""The README's campaign section, from the per-run files in ``docs/results/runs/a/``.

Only the runs of one recipe are aggregated (the recipe with the most full runs): files left by
an older recipe are counted and named, never mixed in. Accuracy is the paper's protocol (test
accuracy at the best validation point of the final size); differences are per seed (paired)
with their standard error. A target is judged only once ``MIN_SEEDS`` seeds have every arm it
compares; before that it says "not enough seeds yet" next to the figure so far. Called by
``report.py`` (one README section, one writer).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from paired import Paired, Summary, paired, summarise
from runstore import RunRecord, RunStore

MIN_SEEDS = 5  # the "≥ 5 seeds to resolve a 0.5 pt difference"
WALL_TARGET, ACC_TARGET = 0.55, 0.5  # × full; points of top-3 accuracy
ORDER = {"full": 0, "in-training": 1, "scratch": 2, "post-training": 3}


@dataclass(frozen=True)
class Arm:
    """One arm's runs of the current recipe, seed → record."""

    name: str
    kind: str
    tau: float | None
    runs: dict[int, RunRecord]

    def ratio(self, full: Arm | None, field: str) -> Summary:
        """Per-seed ``field`` (``wall_s`` / ``cpu_s``) over that seed's full run (arms of one
        seed run back to back, so they share the machine's load)."""
        return summarise(getattr(r, field) / getattr(full.runs[s], field)
                         for s, r in self.runs.items() if full is not None and s in full.runs)

    def acc(self) -> dict[int, float]:
        return {s: r.best_val_test_acc for s, r in self.runs.items()
                if r.best_val_test_acc is not None}


@dataclass(frozen=True)
class Target:
    claim: str
    status: str  # "met" | "missed" | "not enough seeds yet"
    figure: str


def current_runs(records: list[RunRecord]) -> tuple[list[RunRecord], int]:
    """The records of the recipe with the most full runs, and how many others were left out."""
    fulls = Counter(r.recipe_hash for r in records if r.kind == "full")
    if not fulls:
        return [], len(records)
    recipe = max(fulls, key=lambda h: (fulls[h], sum(r.recipe_hash == h for r in records)))
    kept = [r for r in records if r.recipe_hash == recipe]
    return kept, len(records) - len(kept)


def arms_of(records: list[RunRecord]) -> list[Arm]:
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.arm, []).append(r)
    arms = [Arm(name, rs[0].kind, rs[0].tau, {r.seed: r for r in rs})
            for name, rs in groups.items()]
    return sorted(arms, key=lambda a: (ORDER[a.kind], a.tau or 0.0))


def _events(arms: list[Arm]) -> tuple[int, ...]:
    return next((r.event_steps for a in arms if a.kind == "in-training"
                 for r in a.runs.values()), ())


def _status(ok: bool, n: int) -> str:
    return "not enough seeds yet" if n < MIN_SEEDS else ("met" if ok else "missed")


def _signed(points: float) -> str:
    return f"{points:+.2f}".replace("-", "−")


def _pt(d: Paired) -> str:
    if d.mean is None:
        return "–"
    se = "" if d.se is None else f" ± {100 * d.se:.2f}"
    return f"{_signed(100 * d.mean)}{se} pt"


def _twin(arms: list[Arm], kind: str, tau: float | None) -> Arm | None:
    return next((a for a in arms if a.kind == kind and a.tau == tau), None)


def targets(arms: list[Arm]) -> list[Target]:
    """The issue's targets for each in-training arm, judged on the seeds both arms have."""
    full = _twin(arms, "full", None)
    out: list[Target] = []
    for a in (a for a in arms if a.kind == "in-training") if full else ():
        seeds = sorted(a.acc().keys() & full.acc().keys())
        top_a = summarise([a.acc()[s] for s in seeds]).top3
        top_f = summarise([full.acc()[s] for s in seeds]).top3
        gap = None if top_a is None else 100 * (top_a - top_f)
        d = paired(a.acc(), full.acc())
        out.append(Target(
            f"τ={a.tau}: top-3 within {ACC_TARGET} pt of full",
            _status(gap is not None and gap >= -ACC_TARGET, len(seeds)),
            "–" if gap is None else
            f"top-3 gap {_signed(gap)} pt; paired mean {_pt(d)} (n = {d.n})"))
        scratch = _twin(arms, "scratch", a.tau)
        if scratch is not None:
            d = paired(a.acc(), scratch.acc())
            out.append(Target(f"τ={a.tau}: above from scratch at the same size",
                              _status(d.mean is not None and d.mean > 0, d.n),
                              f"{_pt(d)} (n = {d.n})"))
        # judged on wall AND CPU time: on a shared machine another user's load can make the
        # full run's wall time, and so the ratio, look better than the work saved
        ratios, cpu = a.ratio(full, "wall_s"), a.ratio(full, "cpu_s")
        ok = (ratios.mean is not None and cpu.mean is not None
              and max(ratios.mean, cpu.mean) <= WALL_TARGET)
        out.append(Target(f"τ={a.tau}: wall time ≤ {WALL_TARGET}× full (and CPU time)",
                          _status(ok, ratios.n),
                          "–" if ratios.mean is None else
                          f"wall ×{ratios.mean:.2f} ± {ratios.std:.2f}, CPU ×{cpu.mean:.2f} ± "
                          f"{cpu.std:.2f} (n = {ratios.n})"))
        post = _twin(arms, "post-training", a.tau)
        if post is not None:
            d = paired(a.acc(), post.acc())
            ok = d.mean is not None and d.mean > 0
            out.append(Target(f"τ={a.tau}: in-training beats post-training reduction",
                              _status(ok, d.n), f"{_pt(d)} (n = {d.n})"
                              + ("" if ok or d.n < MIN_SEEDS else "; it does not")))
    return out


def _pm(s: Summary, scale: float = 100.0, digits: int = 1) -> str:
    if s.mean is None:
        return "–"
    return f"{scale * s.mean:.{digits}f} ± {scale * s.std:.{digits}f}"


def arm_rows(arms: list[Arm]) -> list[str]:
    full = _twin(arms, "full", None)
    rows = ["| arm | seeds | final state dim | test @ best val % | top-3 mean | vs full "
            "(paired) | final test % | wall s | × full | × full (CPU) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        acc = summarise(a.acc().values())
        dims = summarise(sum(r.dims_final) for r in a.runs.values())
        wall = summarise(r.wall_s for r in a.runs.values())
        ratio, cpu = a.ratio(full, "wall_s"), a.ratio(full, "cpu_s")
        vs = _pt(paired(a.acc(), full.acc())) if full and a is not full else "–"
        rows.append(f"| {a.name} | {len(a.runs)} | {_pm(dims, 1, 0)} | {_pm(acc)} | "
                    f"{'–' if acc.top3 is None else f'{100 * acc.top3:.1f}'} | {vs} | "
                    f"{_pm(summarise(r.test_acc for r in a.runs.values()))} | "
                    f"{_pm(wall, 1, 0)} | {_pm(ratio, 1, 2)} | {_pm(cpu, 1, 2)} |")
    return rows


def settledness_rows(full: Arm) -> list[str]:
    """Mean over the full runs of the ranking's agreement with the end, at each event step."""
    by_step: dict[int, list] = {}
    steps_total = next(iter(full.runs.values())).steps
    for r in full.runs.values():
        for s in r.settledness:
            by_step.setdefault(s.step, []).append(s)
    if not by_step:
        return []
    taus = [t for t, _, _ in next(iter(by_step.values()))[0].topr]
    rows = ["| event step | % of training | Kendall τ (mean ± std) | " + " | ".join(
        f"top-r overlap, τ={t}" for t in taus) + " |", "|---|---|---|" + "---|" * len(taus)]
    for step in sorted(by_step):
        items = by_step[step]
        kendall = summarise(s.kendall for s in items)
        cells = []
        for i in range(len(taus)):
            overlap = summarise(s.topr[i][2] for s in items)
            r = summarise(s.topr[i][1] for s in items)
            cells.append(f"{overlap.mean:.2f} (r ≈ {r.mean:.0f})")
        rows.append(f"| {step} | {100 * step / steps_total:.1f} | {_pm(kendall, 1, 2)} | "
                    + " | ".join(cells) + " |")
    return rows


# campaign folder → what its runs are (the same recipe; only the image size differs)
SHAPES = {"a": "digits 16×16 (L = 256)",
          "a784": "digits upsampled to the sMNIST shape, 28×28 (L = 784; `digits28.py`)"}


# experiment B's SISO/MIMO folders: layer → (folder, kind)
SISO_MIMO = {"s4d": ("b-s4d", "SISO"), "s5": ("b-s5", "MIMO"), "lru": ("b-lru", "MIMO")}


def siso_mimo_section(results: Path) -> list[str]:
    """One row per layer of experiment B's SISO vs MIMO comparison (same recipe and τ; the S4D
    block's state is H channels × N, the others' one n-state MIMO system)."""
    rows = []
    for layer, (folder, kind) in SISO_MIMO.items():
        found, _ = RunStore(results / "runs").all(folder)
        records, _ = current_runs(found)
        arms = arms_of(records)
        full, it = _twin(arms, "full", None), next((a for a in arms if a.kind == "in-training"),
                                                    None)
        if full is None or it is None:
            continue
        scratch, post = _twin(arms, "scratch", it.tau), _twin(arms, "post-training", it.tau)
        n0 = next(iter(full.runs.values())).dims_final[0]
        dims = summarise(sum(r.dims_final) for r in it.runs.values())
        seeds = len(it.runs.keys() & full.runs.keys())
        rows.append(
            f"| {layer} | {kind} | {n0} | {dims.mean:.1f} ({100 * dims.mean / n0:.0f} %) | "
            f"{_pm(summarise(full.acc().values()))} | {_pm(summarise(it.acc().values()))} | "
            f"{_pt(paired(it.acc(), full.acc()))} | "
            f"{_pt(paired(it.acc(), scratch.acc())) if scratch else '–'} | "
            f"{_pt(paired(it.acc(), post.acc())) if post else '–'} | "
            f"{_pm(it.ratio(full, 'cpu_s'), 1, 2)} | {seeds} |")
    if not rows:
        return []
    return ["### B′. SISO (S4D) vs MIMO (S5, LRU): one block, raw digits (L = 64), same τ", "",
            "Generated from `docs/results/runs/b-*/` (`campaign_a.py --siso-mimo LAYER`: "
            "campaign A's harness and arms, n0 64, H 16, 1,000 steps, τ = 0.02). For S4D, n "
            "is the per-channel N (its state is 16 × N); a reduction cuts every channel to the "
            "same N. Differences are paired per seed (mean ± standard error).", "",
            "| layer | kind | n0 | in-training final n (kept) | full test % | in-training % | "
            "vs full | vs scratch | vs post-training | CPU × full | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows]


def campaign_section(results: Path) -> list[str]:
    """Markdown lines of the campaigns and of the smoke recipe's runs, if any (none without
    run files)."""
    lines: list[str] = []
    for experiment in SHAPES:
        part = experiment_section(results, experiment)
        lines += ([""] if lines and part else []) + part
    siso = siso_mimo_section(results)
    lines += ([""] if lines and siso else []) + siso
    quick = experiment_section(results, "a-quick")
    if quick:
        lines += ([""] if lines else []) + quick[:2] + [
            "**Quick smoke-test figures (`campaign_a.py --quick`), not results.**", ""] + quick[2:]
    return lines


def experiment_section(results: Path, experiment: str) -> list[str]:
    """Markdown lines of one campaign folder (no lines when it has no run files yet)."""
    found, unreadable = RunStore(results / "runs").all(experiment)
    records, stale = current_runs(found)
    stale += unreadable
    if not records:
        return []
    arms = arms_of(records)
    full = _twin(arms, "full", None)
    seeds = sorted({r.seed for r in records})
    shape = SHAPES.get(experiment, experiment)
    lines = [f"### A′. One LRU block, {shape}: the campaign, {len(seeds)} seed(s) so far", "",
             f"Generated from the per-run files in `docs/results/runs/{experiment}/` "
             "(`tools/experiments/campaign_a.py`; the recipe and its tuning are in that "
             "script's docstring). test @ best val: the paper's protocol; top-3 mean: the best "
             "3 seeds; vs full: mean ± standard error of the per-seed difference. "
             "Post-training: the trained full model reduced to the in-training run's final "
             "size by balanced truncation, no fine-tuning (its wall time includes the full "
             f"training). {records[0].steps} steps per run, events at steps "
             f"{', '.join(map(str, _events(arms)))}, {records[0].threads} thread.", ""]
    lines += arm_rows(arms)
    if stale:
        lines += ["", f"({stale} run file(s) of an older recipe or format are not included.)"]
    lines += ["", f"Targets (judged at ≥ {MIN_SEEDS} seeds with every arm compared):", ""]
    lines += [f"- {t.claim}: **{t.status}** — {t.figure}" for t in targets(arms)]
    rows = settledness_rows(full) if full is not None else []
    if rows:
        lines += ["", "Ranking settledness at the event steps (full runs, never reduced, against "
                      "their end of training; modal Hankel scores; r is the τ rule's rank on the "
                      "final spectrum, chance overlap r / n):", ""] + rows
    return lines
