"""The campaign harness (tools/experiments/campaign_a.py and its store, statistics and report):
per-run files written once and reused, paired statistics, and targets judged only with
enough seeds."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "experiments"


def _module(name: str):
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module(name)


def test_summary_and_paired_difference_known_values():
    paired = _module("paired")
    s = paired.summarise([0.9, None, 0.7, 0.8, 0.6])
    assert (s.n, s.top3) == (4, pytest.approx(0.8))
    assert s.mean == pytest.approx(0.75) and s.std == pytest.approx(math.sqrt(1 / 60))
    # seed 9 has no partner and is left out; the differences are 1, 2, 4
    d = paired.paired({0: 1.0, 1: 2.0, 2: 4.0, 9: 50.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d.n == 3 and d.mean == pytest.approx(7 / 3)
    assert d.se == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3))
    assert paired.paired({0: 1.0}, {0: 0.5}).se is None
    assert paired.paired({0: 1.0}, {1: 0.5}).n == 0


def _record(kind: str, seed: int, acc: float, tau: float | None = 0.01, wall: float = 10.0,
            recipe: str = "r1"):
    runstore = _module("runstore")
    arm = "full" if kind == "full" else f"{kind} tau={tau}"
    return runstore.RunRecord(
        experiment="a", arm=arm, kind=kind, tau=None if kind == "full" else tau, seed=seed,
        steps=100, spec_hash=f"{arm}{seed}", recipe_hash=recipe, dims_final=(256,),
        test_acc=acc, best_val_test_acc=acc, wall_s=wall, cpu_s=wall, threads=1,
        load_avg=(0.5, 0.5))


def test_store_round_trip_skips_other_specs_and_unreadable_files(tmp_path):
    runstore, stability = _module("runstore"), _module("stability")
    store = runstore.RunStore(tmp_path)
    record = dataclasses.replace(_record("full", 0, 0.9), settledness=(
        stability.Settledness(step=3, block="blocks.0.ssm", kendall=0.5,
                              topr=((0.01, 40, 0.75),)),))
    path = store.save(record, {"lr": 1e-2})
    assert json.loads(path.read_text())["spec"] == {"lr": 1e-2}
    assert store.load("a", "full", 0, record.spec_hash) == record
    assert store.load("a", "full", 0, "another spec") is None
    assert store.load("a", "full", 1, record.spec_hash) is None
    (tmp_path / "a" / "scratch_tau=0.01__seed0.json").write_text('{"arm": "scratch"}')
    records, unreadable = store.all("a")
    assert records == [record] and unreadable == 1
    assert runstore.spec_hash({"a": 1, "b": 2}) == runstore.spec_hash({"b": 2, "a": 1})
    assert runstore.spec_hash({"a": 1}) != runstore.spec_hash({"a": 2})


def _campaign(seeds: int, in_training: float, post: float, recipe: str = "r1"):
    out = []
    for s in range(seeds):
        full = 0.90 + 0.01 * s  # seed-to-seed spread that the paired difference cancels
        out += [_record("full", s, full, wall=100.0, recipe=recipe),
                _record("in-training", s, full + in_training, wall=50.0, recipe=recipe),
                _record("scratch", s, full - 0.02, wall=40.0, recipe=recipe),
                _record("post-training", s, full + post, wall=101.0, recipe=recipe)]
    return out


def _targets(records):
    report = _module("campaign_report")
    kept, _ = report.current_runs(records)
    return {t.claim.split(": ", 1)[1]: t.status for t in report.targets(report.arms_of(kept))}


def test_targets_wait_for_enough_seeds_then_say_met_or_missed():
    assert set(_targets(_campaign(4, -0.001, -0.05)).values()) == {"not enough seeds yet"}
    met = _targets(_campaign(5, -0.001, -0.05))
    assert met == {"top-3 within 0.5 pt of full": "met",
                   "above from scratch at the same size": "met",
                   "wall time ≤ 0.55× full (and CPU time)": "met",
                   "in-training beats post-training reduction": "met"}
    missed = _targets(_campaign(5, -0.01, 0.0))
    assert missed["top-3 within 0.5 pt of full"] == "missed"
    assert missed["in-training beats post-training reduction"] == "missed"
    assert missed["above from scratch at the same size"] == "met"


def test_report_uses_one_recipe_and_counts_the_rest():
    report = _module("campaign_report")
    records = _campaign(5, 0.0, 0.0, recipe="new") + _campaign(2, 0.0, 0.0, recipe="old")
    kept, stale = report.current_runs(records)
    assert {r.recipe_hash for r in kept} == {"new"} and stale == 8


def test_settledness_picks_the_event_steps_of_a_stability_report():
    stability = _module("stability")
    rep = {"steps": [1, 5, 10], "blocks": {"b": {
        "ranks": {"0.01": 7}, "kendall": [0.1, 0.6, 1.0],
        "topr_overlap": {"0.01": [0.2, 0.5, 1.0]}}}}
    (s,) = stability.settledness_at(rep, (5,))
    assert (s.step, s.block, s.kendall, s.topr) == (5, "b", 0.6, ((0.01, 7, 0.5),))
    with pytest.raises(ValueError, match="no snapshot"):
        stability.settledness_at(rep, (4,))


def test_quick_campaign_writes_every_arm_once_and_reruns_a_changed_recipe(tmp_path, monkeypatch):
    campaign = _module("campaign_a")
    args = ["--quick", "--quiet", "--seeds", "1", "--results", str(tmp_path)]
    assert campaign.main(args) == 0
    folder = tmp_path / "runs" / "a-quick"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["full__seed0.json", "in-training_tau=0.04__seed0.json",
                     "post-training_tau=0.04__seed0.json", "scratch_tau=0.04__seed0.json"]
    runs = {n: json.loads((folder / n).read_text()) for n in files}
    reduced = runs["in-training_tau=0.04__seed0.json"]
    assert reduced["dims_final"][0] < 16 and reduced["event_steps"]
    for name in ("scratch_tau=0.04__seed0.json", "post-training_tau=0.04__seed0.json"):
        assert runs[name]["dims_final"] == reduced["dims_final"]  # the same final size
    full = runs["full__seed0.json"]
    assert [s["step"] for s in full["settledness"]] == reduced["event_steps"]
    assert runs["post-training_tau=0.04__seed0.json"]["wall_s"] > full["wall_s"]
    mtimes = {n: (folder / n).stat().st_mtime_ns for n in files}
    assert campaign.main(args) == 0  # everything found: nothing retrained
    assert {n: (folder / n).stat().st_mtime_ns for n in files} == mtimes
    monkeypatch.setattr(campaign, "QUICK", dataclasses.replace(campaign.QUICK, lr=1e-3))
    assert campaign.main(args) == 0
    rerun = json.loads((folder / "full__seed0.json").read_text())
    assert rerun["spec"]["lr"] == 1e-3 and rerun["spec_hash"] != full["spec_hash"]
    report = _module("campaign_report")
    text = "\n".join(report.campaign_section(tmp_path))
    assert "not enough seeds yet" in text and "post-training tau=0.04" in text
