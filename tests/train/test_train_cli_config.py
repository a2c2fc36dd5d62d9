"""Config files, presets and the ``ssmcompile train`` command (the contract users rely on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmcompile.cli.train import main
from ssmcompile.io import read_checkpoint_meta
from ssmcompile.train.config import ConfigError, TrainConfig, load_config
from ssmcompile.train.metrics import read_jsonl
from ssmcompile.train.presets import get_preset
from ssmcompile.train.state_io import load_trainer_state

REPO = Path(__file__).resolve().parents[2]


def test_toml_overlays_a_preset(tmp_path):
    (tmp_path / "c.toml").write_text(
        'preset = "lru-digits"\nsteps = 300\npipeline = "hankel-analysis,balanced-truncation'
        '{rank=8}"\n[model]\nd_model = 24\n[optim]\nbetas = [0.8, 0.99]\ngrad_clip = 2\n'
        '[schedule]\nfractions = [0.1, 0.2]\n[pragmatic]\nenabled = true\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.steps == 300 and cfg.model.d_model == 24 and cfg.model.state_dim == 96
    assert cfg.optim.betas == (0.8, 0.99) and cfg.optim.grad_clip == 2.0
    assert cfg.schedule.event_steps(300) == (30, 60) and cfg.pragmatic.enabled
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("text,match", [
    ("stepz = 3", "unknown config key stepz"),
    ("[model]\nd_model = 'wide'", "model.d_model: expected int"),
    ("[schedule]\nsteps = [3]\nevery = 2", "schedule: set only one"),
    ("steps = 0", "steps must be >= 1"),
    ("preset = 'nope'", "unknown preset 'nope'"),
    ("steps = = 3", "invalid TOML"),
    ("[data]\ndataset = 'mnist'", "needs data.path"),
])
def test_bad_configs_name_the_problem(tmp_path, text, match):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "c.toml")


def test_presets_are_valid_and_default_schedule_is_the_papers():
    cfg = get_preset("lru-digits")
    assert cfg.schedule.event_steps(cfg.steps) == (25, 50, 75, 100)
    assert "balanced-truncation" in cfg.pipeline and cfg.compile == "auto"


@pytest.mark.parametrize("argv,match", [
    (["missing.toml"], "no such config file"),
    (["--preset", "nope"], "unknown preset"),
    ([], "give a CONFIG.toml or --preset"),
    (["--preset", "lru-digits", "--resume"], "--resume needs --out"),
])
def test_cli_errors_are_one_line_without_traceback(capsys, argv, match):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_resume_without_a_checkpoint(tmp_path, capsys):
    assert main(["--preset", "lru-digits", "--out", str(tmp_path), "--resume", "-q"]) != 0
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_then_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssmcompile.cli.main", "train", "--preset", "lru-digits",
           "--out", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run([*cmd, "--steps", "4"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "state dims (per block)" in first.stdout and "96 →" in first.stdout
    for name in ("last.safetensors", "last.state.safetensors", "metrics.jsonl"):
        assert (out / name).is_file(), name
    for name in ("hsv_spectra.png", "training.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    meta = read_checkpoint_meta(out / "last.safetensors")
    assert meta.extra["step"] == "4" and [e.step for e in meta.history] == [1]
    # resume to 8 steps; the config comes from the checkpoint (no preset given)
    second = subprocess.run([sys.executable, "-m", "ssmcompile.cli.main", "train", "--out",
                             str(out), "--steps", "8", "--resume", "--override", "steps",
                             "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    meta2 = read_checkpoint_meta(out / "last.safetensors")
    assert meta2.extra["step"] == "8" and meta2.history == meta.history
    assert load_trainer_state(out / "last.state.safetensors").step == 8
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert steps == [4, 8]  # the resumed log continues the first one, nothing duplicated


def tiny(pipeline: str, **changes) -> TrainConfig:
    from ssmcompile.train.config import DataConfig, ModelConfig
    from ssmcompile.train.schedule import ReductionSchedule

    return TrainConfig(model=ModelConfig(d_model=8, state_dim=8), data=DataConfig(batch_size=16),
                       steps=6, eval_every=6, probe_size=8, progress=False,
                       schedule=ReductionSchedule.at(3), pipeline=pipeline, **changes)


def test_pipeline_typos_fail_at_construction_and_event_failures_are_skipped_or_raised():
    from ssmcompile.errors import PassError, RankError
    from ssmcompile.train.records import SkippedRecord, of_kind
    from ssmcompile.train.trainer import Trainer

    with pytest.raises(PassError, match="unknown pass"):
        Trainer(tiny("hankel-analysis,balanced-trunc{tau=0.1}"))
    failing = "hankel-analysis,balanced-truncation{overrides=blocks.9.ssm=3}"  # no such block
    result = Trainer(tiny(failing)).fit()
    (skipped,) = of_kind(result.metrics, SkippedRecord)
    assert skipped.step == 3 and "blocks.9.ssm" in skipped.reason
    assert result.history == () and result.dims_final == (8,)
    with pytest.raises(RankError):
        Trainer(tiny(failing, strict_reduction=True)).fit()
