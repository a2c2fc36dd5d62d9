"""Smoke test of the experiment harness (tools/experiments): every script in --quick mode into a
temporary directory, then the README report; plus the rank-stability measures on known cases."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "experiments"
SCRIPTS = ("exp_a_digits", "exp_b_multiblock", "exp_c_rank_stability", "exp_d_overhead")


def _module(name: str):
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    runs, results = root / "runs", root / "results"
    seconds = {}
    for name in SCRIPTS:
        start = time.perf_counter()
        rc = _module(name).main(["--quick", "--quiet", "--runs", str(runs),
                                 "--results", str(results)])
        seconds[name] = time.perf_counter() - start
        assert rc == 0, name
    return {"runs": runs, "results": results, "seconds": seconds, "root": root}


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, path


def _run(campaign, experiment: str, arm: str, seed: int = 0) -> dict:
    return _json(campaign["runs"] / experiment / arm / f"seed{seed}" / "result.json")


def test_experiment_a_arms_and_runs(campaign):
    data = _json(campaign["results"] / "exp_a.json")
    assert data["quick"] and data["environment"]["threads"] == 1
    assert data["data"]["seq_len"] == 64 and data["data"]["test"] > 0  # 8×8 digits, quick
    assert data["runs_wall_s"] > 0
    kinds = [a["kind"] for a in data["arms"]]
    assert kinds == ["full", "in-training", "scratch"]
    full, reduced, scratch = data["arms"]
    n0 = data["settings"]["n0"]
    assert full["dims_final"] == [[n0]]
    assert reduced["dims_final"][0][0] < n0  # the τ rule cut states at the quick size
    assert scratch["dims_final"] == reduced["dims_final"]  # from scratch at the same size
    assert full["wall_ratio"]["values"] == [1.0]
    for arm in data["arms"]:
        assert 0.0 <= arm["test_acc"]["mean"] <= 1.0
        assert arm["wall_s"]["mean"] > 0
    run = _run(campaign, "a", "in-training_tau=0.04")
    dims = [run["dims_initial"]] + [e["dims_after"] for e in run["events"]]
    assert all(a >= b for x, y in zip(dims[:-1], dims[1:], strict=True)
               for a, b in zip(x, y, strict=True))
    assert dims[-1] == run["dims_final"] == reduced["dims_final"][0]
    for event in run["events"]:
        assert set(event["passes_s"]) == {"hankel-analysis", "balanced-truncation", "verify"}
        assert sum(event["passes_s"].values()) <= event["reduce_s"]
    assert [e["step"] for e in run["evals"]] == [8, 16]
    assert run["step_s"][0] is None and len(run["step_s"]) == 16
    assert sum(run["step_s"][1:]) <= run["wall_s"]
    assert run["threads"] == 1
    for name in ("exp_a_accuracy.png", "exp_a_walltime.png"):
        _png(campaign["results"] / name)


def test_experiment_b_per_block_dims(campaign):
    data = _json(campaign["results"] / "exp_b.json")
    arms = {a["arm"]: a for a in data["arms"]}
    n_blocks, n0 = data["settings"]["n_blocks"], data["settings"]["n0"]
    assert arms["full"]["dims_final"] == [[n0] * n_blocks]
    for rule in ("τ=0.04", "budget=0.7"):
        reduced, scratch = arms[f"in-training {rule}"], arms[f"scratch ({rule} dims)"]
        assert len(reduced["dims_final"][0]) == n_blocks
        assert scratch["dims_final"] == reduced["dims_final"]
    budget = arms["in-training budget=0.7"]
    assert budget["total_dim"]["mean"] < n0 * n_blocks
    # the from-scratch model really was built with per-block dims (not n0 everywhere)
    run = _run(campaign, "b", "scratch_budget=0.7")
    assert run["dims_initial"] == run["dims_final"] == budget["dims_final"][0]
    _png(campaign["results"] / "exp_b_accuracy.png")


def test_experiment_c_agreement_with_the_end_is_one_at_the_end(campaign):
    data = _json(campaign["results"] / "exp_c.json")
    agg = data["aggregate"]
    assert agg["steps"][0] == 1 and agg["steps"][-1] == data["steps_total"]
    assert agg["steps"] == sorted(agg["steps"])
    assert agg["kendall"][-1]["mean"] == pytest.approx(1.0)
    for entry in agg["taus"].values():
        assert entry["topr_overlap"][-1]["mean"] == pytest.approx(1.0)
        assert entry["subspace_overlap"][-1]["mean"] == pytest.approx(1.0)
        for s in entry["topr_overlap"] + entry["subspace_overlap"]:
            assert -1e-9 <= s["mean"] <= 1 + 1e-9
    assert all(-1 <= k["mean"] <= 1 for k in agg["kendall"])
    assert len(data["hsv_seed0"]) == len(agg["steps"])
    _png(campaign["results"] / "exp_c_stability.png")


def test_experiment_d_parts_add_up(campaign):
    data = _json(campaign["results"] / "exp_d.json")
    rows = {r["arm"]: r for r in data["rows"]}
    assert set(rows) == {"A τ=0.04", "A τ=0.04, no verify", "B τ=0.04", "B budget=0.7"}
    # without its verify pass the run trains the very same model; only the times differ
    assert rows["A τ=0.04, no verify"]["same_model_as_with_verify"] is True
    assert rows["A τ=0.04, no verify"]["parts_s"]["verify"]["mean"] == 0.0
    assert rows["A τ=0.04"]["parts_s"]["verify"]["mean"] > 0.0
    run = _run(campaign, "a", "in-training_tau=0.04")
    row = rows["A τ=0.04"]
    # recompute the overhead from the run file, independently of exp_d's helper
    analysis = sum(e["passes_s"]["hankel-analysis"] for e in run["events"])
    rewrite = sum(e["passes_s"]["balanced-truncation"] for e in run["events"])
    rest = sum(e["reduce_s"] - sum(e["passes_s"].values()) for e in run["events"])
    first = sum(max(0.0, e["next_step_s"] - e["reduce_s"] - run["step_s_after"])
                for e in run["events"])
    assert row["parts_s"]["analysis"]["mean"] == pytest.approx(analysis)
    assert row["parts_s"]["rewrite"]["mean"] == pytest.approx(rewrite)
    assert row["fraction"]["mean"] == pytest.approx((analysis + rewrite + rest + first)
                                                    / run["wall_s"])
    assert row["fraction_with_verify"]["mean"] > row["fraction"]["mean"]
    _png(campaign["results"] / "exp_d_overhead.png")


def test_rerun_reuses_finished_runs_and_a_new_spec_trains_again(campaign):
    result = campaign["runs"] / "a" / "full" / "seed0" / "result.json"
    before = result.stat().st_mtime_ns
    args = ["--quick", "--quiet", "--runs", str(campaign["runs"]), "--results",
            str(campaign["root"] / "again")]
    assert _module("exp_a_digits").main(args) == 0
    assert result.stat().st_mtime_ns == before
    assert (_json(campaign["root"] / "again" / "exp_a.json")["arms"][0]["test_acc"]
            == _json(campaign["results"] / "exp_a.json")["arms"][0]["test_acc"])
    copy = campaign["root"] / "runs-copy"
    shutil.copytree(campaign["runs"], copy)
    args[3] = str(copy)
    assert _module("exp_a_digits").main(args + ["--steps", "12"]) == 0
    rerun = _json(copy / "a" / "full" / "seed0" / "result.json")
    assert rerun["spec"]["steps"] == 12 and len(rerun["step_s"]) == 12  # a new spec retrains


def test_report_rewrites_only_the_marked_span(campaign, capsys):
    report = _module("report")
    readme = campaign["root"] / "README.md"
    shutil.copy(REPO / "README.md", readme)
    original = readme.read_text()
    head, tail = original.split(report.START)[0], original.split(report.END)[1]
    assert report.main(["--results", str(campaign["results"]), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(head + report.START) and text.endswith(report.END + tail)
    for title in ("### A.", "### B.", "### C.", "### D.", "Quick smoke-test figures"):
        assert title in text
    for link in ("results/exp_a_accuracy.png", "results/exp_c_stability.png"):
        assert f"]({link})" in text and (readme.parent / link).exists()
    assert report.main(["--results", str(campaign["results"]), "--readme", str(readme)]) == 0
    assert readme.read_text() == text  # regenerating is idempotent
    broken = campaign["root"] / "BROKEN.md"
    broken.write_text("no markers here\n")
    capsys.readouterr()
    assert report.main(["--results", str(campaign["results"]), "--readme", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert broken.read_text() == "no markers here\n"


def test_quick_campaign_fits_its_budget(campaign):
    assert sum(campaign["seconds"].values()) < 60, campaign["seconds"]


# ---- the rank-stability measures on cases with known answers --------------------------------


def test_kendall_and_topr_overlap_known_values():
    stability = _module("stability")
    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert stability.kendall_tau(a, a) == pytest.approx(1.0)
    assert stability.kendall_tau(a, -a) == pytest.approx(-1.0)
    assert stability.kendall_tau(a, np.array([4.0, 5.0, 3.0, 2.0, 1.0])) == pytest.approx(0.8)
    assert stability.topr_overlap(a, a[::-1].copy(), 2) == 0.0
    assert stability.topr_overlap(a, np.array([5.0, 1.0, 4.0, 2.0, 3.0]), 2) == 0.5


def test_modal_score_of_one_state_is_its_hsv_and_subspaces_compare():
    from ssmcompile.numerics import LTISystem, hankel_singular_values

    stability = _module("stability")
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([0.9 * np.exp(0.3j)], dtype=torch.complex128)
    B = torch.randn(1, 3, dtype=torch.complex128, generator=g)
    C = torch.randn(2, 1, dtype=torch.complex128, generator=g)
    one = LTISystem(lam, B, C)
    assert stability.modal_scores(one)[0] == pytest.approx(
        float(hankel_singular_values(lam, B, C)[0]), rel=1e-9)
    n = 12
    lam = 0.95 * torch.exp(1j * torch.linspace(0.1, 3.0, n, dtype=torch.float64))
    sys_ = LTISystem(lam.to(torch.complex128), torch.randn(n, 2, dtype=torch.complex128,
                                                           generator=g),
                     torch.randn(2, n, dtype=torch.complex128, generator=g))
    q = stability.kept_subspace(sys_, 4)
    assert q.shape == (n, 4)
    assert stability.subspace_overlap(q, q) == pytest.approx(1.0)
    e = torch.eye(n, dtype=torch.complex128)
    assert stability.subspace_overlap(e[:, :3], e[:, 3:6]) == pytest.approx(0.0)
    assert stability.subspace_overlap(stability.kept_subspace(sys_, n), e) == pytest.approx(1.0)
