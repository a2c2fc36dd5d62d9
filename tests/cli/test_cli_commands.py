"""The CLI subcommands in-process: output shapes checked against the numerics and the library
API they wrap (differential), files written only where and when they should be."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ssmcompile import __version__
from ssmcompile.adapters import adapter_for
from ssmcompile.api import run_pipeline
from ssmcompile.cli import analyze, inspect, reduce
from ssmcompile.cli.main import build_parser, main
from ssmcompile.io import load_checkpoint, read_checkpoint_meta, save_checkpoint
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.numerics import energy_rank, hankel_singular_values


def make_checkpoint(path: Path, kind: str = "lru", dims=(6, 5), step: str | None = "5") -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(layer=kind, d_model=4, state_dims=tuple(dims), d_output=3, d_input=2)
    model = build_model(spec).eval()
    return save_checkpoint(path, model, spec=spec.to_dict(),
                           extra={"step": step} if step is not None else None)


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return make_checkpoint(tmp_path / "model.safetensors")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_analyze_json_matches_numerics(ckpt, capsys):
    code, out, _ = run_cli(capsys, "analyze", ckpt, "--json")
    assert code == 0
    report = json.loads(out)  # exactly one JSON object on stdout
    assert [b["name"] for b in report["blocks"]] == ["blocks.0.ssm", "blocks.1.ssm"]
    model, _ = load_checkpoint(ckpt)
    for b in report["blocks"]:
        assert set(b) >= {"name", "kind", "state_dim", "hsv", "suggested", "energy"}
        module = model.get_submodule(b["name"])
        system = adapter_for(module).read(module)
        hsv = hankel_singular_values(system.A, system.B, system.C)
        assert b["kind"] == "lru" and b["state_dim"] == len(b["hsv"]) == module.state_dim
        assert b["hsv"] == sorted(b["hsv"], reverse=True)
        torch.testing.assert_close(torch.tensor(b["hsv"], dtype=torch.float64), hsv)
        assert [s["tau"] for s in b["suggested"]] == [0.01, 0.02, 0.05, 0.1]
        for s in b["suggested"]:
            assert s["rank"] == energy_rank(hsv, s["tau"])
        kept = {e["rank"]: e["kept"] for e in b["energy"]}
        assert kept[1] == pytest.approx(float(hsv[0] / hsv.sum()))


def test_analyze_text_plot_explain(ckpt, tmp_path, capsys):
    png = tmp_path / "hsv.png"
    code, out, _ = run_cli(capsys, "analyze", ckpt, "--plot", png, "--explain")
    assert code == 0
    assert "blocks.0.ssm  (lru, n = 6)" in out and "blocks.1.ssm  (lru, n = 5)" in out
    assert "suggested ranks: tau=0.01 ->" in out and "every candidate matched" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hsv.png", "model.safetensors"]


def test_reduce_rank_writes_replayable_checkpoint(ckpt, capsys):
    code, out, _ = run_cli(capsys, "reduce", ckpt, "--rank", "3")
    assert code == 0
    out_path = ckpt.with_name("model.reduced.safetensors")
    assert f"wrote {out_path}" in out and "6 → 3" in out and "5 → 3" in out
    reduced, meta = load_checkpoint(out_path)
    assert meta.spec["state_dims"] == [3, 3] and meta.initial_spec["state_dims"] == [6, 5]
    assert meta.extra == {"step": "5"}
    # differential: the same pipeline through the library gives the same weights and events
    original, _ = load_checkpoint(ckpt)
    x = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(0))
    expected, _, state = run_pipeline(
        original, x, "hankel-analysis,balanced-truncation{rank=3},verify")
    for k, t in expected.state_dict().items():
        torch.testing.assert_close(reduced.state_dict()[k], t, rtol=0, atol=0)
    for e in meta.history:
        res = state.rewrites[e.block]
        assert (e.step, e.n, e.r) == (5, res.hsv.shape[-1], 3)
        assert e.hsv_kept == tuple(res.hsv[:3].tolist())
        assert e.bound == pytest.approx(2 * float(res.hsv[3:].sum()))


def test_reduce_compounds_and_inspect_shows_history(ckpt, tmp_path, capsys):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run_cli(capsys, "reduce", ckpt, "--block", "blocks.0.ssm=4", "-o", first)[0] == 0
    assert read_checkpoint_meta(first).spec["state_dims"] == [4, 5]  # only the named block
    assert run_cli(capsys, "--quiet", "reduce", first, "--rank", "2", "-o", second)[0] == 0
    meta = read_checkpoint_meta(second)
    assert [(e.block, e.n, e.r) for e in meta.history] == [
        ("blocks.0.ssm", 6, 4), ("blocks.0.ssm", 4, 2), ("blocks.1.ssm", 5, 2)]
    code, out, _ = run_cli(capsys, "inspect", second, "--quiet")
    assert code == 0
    assert "blocks.0.ssm: n = 2  (initially 6)" in out
    assert "blocks.1.ssm: n = 2  (initially 5)" in out
    assert out.count(" -> ") == 1 + 3 and "step=5" in out  # header + one row per event
    code, out, _ = run_cli(capsys, "inspect", second, "--json")
    d = json.loads(out)
    model, _ = load_checkpoint(second)
    assert d["parameters"] == sum(p.numel() for p in model.parameters())
    assert d["file_bytes"] == second.stat().st_size
    assert [b["state_dim"] for b in d["blocks"]] == [2, 2]
    assert [h["r"] for h in d["history"]] == [4, 2, 2]
    assert d["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize("rule", [("--tau", "0.3"), ("--fraction", "0.5"), ("--budget", "0.5")])
def test_reduce_rules_match_policy(ckpt, tmp_path, capsys, rule):
    out_path = tmp_path / "r.safetensors"
    code, out, _ = run_cli(capsys, "reduce", ckpt, *rule, "-o", out_path, "--json")
    assert code == 0
    result = json.loads(out)
    dims = read_checkpoint_meta(out_path).spec["state_dims"]
    assert dims == [b["rank"] for b in result["report"]["blocks"]]
    if rule[0] == "--fraction":
        assert dims == [3, 3]  # ceil(0.5 · 6), ceil(0.5 · 5)
    if rule[0] == "--budget":
        assert sum(dims) == 6  # ceil(0.5 · 11) states kept across the two blocks
    if rule[0] == "--tau":
        code, out, _ = run_cli(capsys, "analyze", ckpt, "--json")
        hsvs = [torch.tensor(b["hsv"]) for b in json.loads(out)["blocks"]]
        assert dims == [energy_rank(h, 0.3) for h in hsvs]


def test_reduce_force_and_nothing_to_do(ckpt, tmp_path, capsys):
    out_path = tmp_path / "out.safetensors"
    out_path.write_bytes(b"old")
    assert run_cli(capsys, "reduce", ckpt, "--rank", "4", "-o", out_path, "--force")[0] == 0
    assert read_checkpoint_meta(out_path).spec["state_dims"] == [4, 4]
    code, out, _ = run_cli(capsys, "reduce", ckpt, "--fraction", "0.99")  # keeps every state
    assert code == 0 and "nothing written" in out
    assert not ckpt.with_name("model.reduced.safetensors").exists()


def test_version_help_and_dispatch(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"ssmcompile {__version__}"
    assert run_cli(capsys, "--help")[0] == 0
    code, _, err = run_cli(capsys)
    assert code == 2 and "required" in err
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    expected = {"analyze", "reduce", "inspect"}
    for optional in ("export", "train"):  # dispatched to when their modules exist
        if importlib.util.find_spec(f"ssmcompile.cli.{optional}") is not None:
            expected.add(optional)
    assert expected <= set(sub.choices)


def test_standalone_mains_and_interrupt(ckpt, capsys, monkeypatch):
    assert inspect.main([str(ckpt)]) == 0
    assert "builder: ssm-model" in capsys.readouterr().out
    assert analyze.main([str(ckpt.with_name("missing.safetensors"))]) == 1
    assert capsys.readouterr().err.startswith("ssmcompile: error: no such file")
    assert reduce.main(["--rank"]) == 2

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect, "run", interrupted)
    assert main(["inspect", str(ckpt)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_probe_for_token_models(tmp_path, capsys):
    torch.manual_seed(0)
    spec = ModelSpec(layer="s4d", d_model=4, state_dims=(4,), d_output=7, vocab_size=7,
                     task="lm", norm="layer")
    path = save_checkpoint(tmp_path / "lm.safetensors", build_model(spec), spec=spec.to_dict())
    code, out, _ = run_cli(capsys, "analyze", path, "--json", "--probe-length", "8")
    assert code == 0
    (block,) = json.loads(out)["blocks"]
    assert block["kind"] == "s4d" and block["state_dim"] == 4 and len(block["hsv"]) == 16
