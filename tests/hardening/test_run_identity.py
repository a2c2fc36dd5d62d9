"""A run directory owns its identity: a resume with another config, other data or another
model is refused naming what differs (unless the fields are overridable and named), a fresh
run never starts over (or "resumes") an older run unless forced, only the trainer's own temp
files are removed, and a failed start leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from train_run_helpers import TINY_TOML, error_line, snapshot, tiny_config

from ssmcompile.cli.main import main
from ssmcompile.errors import ShapeError
from ssmcompile.io import load_tensors
from ssmcompile.train.checkpoints import RunDirectory
from ssmcompile.train.config import ConfigError
from ssmcompile.train.data import Split, TaskData
from ssmcompile.train.metrics import read_jsonl
from ssmcompile.train.run_identity import read_identity
from ssmcompile.train.schedule import ReductionSchedule
from ssmcompile.train.state_io import load_trainer_state
from ssmcompile.train.trainer import Trainer


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """``tiny.toml`` and a finished 6-step run of it in ``run/``."""
    root = tmp_path_factory.mktemp("identity")
    (root / "tiny.toml").write_text(TINY_TOML)
    assert main(["train", str(root / "tiny.toml"), "--out", str(root / "run"), "-q"]) == 0
    return root


@pytest.fixture
def work(base, tmp_path) -> Path:
    shutil.copy(base / "tiny.toml", tmp_path / "tiny.toml")
    shutil.copytree(base / "run", tmp_path / "run")
    return tmp_path


def train(work: Path, *args: str) -> int:
    return main(["train", str(work / "tiny.toml"), "--out", str(work / "run"), "-q", *args])


@pytest.mark.parametrize("args,expect", [
    (["--steps", "8"], "steps 8 != 6 (pass --override steps to continue with the new values)"),
    (["--steps", "8", "--threads", "2"], "steps 8 != 6; threads 2 != 1 (pass --override "
                                         "steps,threads"),
    (["--tau", "0.2"], "pipeline 'hankel-analysis,balanced-truncation{tau=0.2},verify' != "
                       "'hankel-analysis,balanced-truncation{fraction=0.75}' (pipeline cannot "
                       "change on resume"),
    (["--seed", "2"], "seed 2 != 1"),
    (["--pragmatic"], "pragmatic.enabled True != False"),
    (["--steps", "8", "--override", "threads"], "steps 8 != 6"),
])
def test_resume_with_another_config_is_refused_naming_the_fields(work, capsys, args, expect):
    before = snapshot(work)
    line = error_line(train(work, "--resume", *args), *capsys.readouterr())
    assert "--resume: config differs from the run's stored config (requested != stored)" in line
    assert expect in line, line
    assert snapshot(work) == before


def test_resume_with_another_preset_or_data_split_is_refused(work, capsys):
    argv = ["train", "--preset", "s5-digits", "--out", str(work / "run"), "--resume", "-q"]
    line = error_line(main(argv), *capsys.readouterr())
    assert "model.layer 's5' != 'lru'" in line and "cannot change on resume" in line, line
    (work / "other.toml").write_text(TINY_TOML.replace("[data]", "[data]\nsplit_seed = 4"))
    argv = ["train", str(work / "other.toml"), "--out", str(work / "run"), "--resume", "-q"]
    line = error_line(main(argv), *capsys.readouterr())
    assert "data.split_seed 4 != 0" in line, line


def test_override_steps_extends_the_run_and_is_recorded(work, capsys):
    assert train(work, "--resume", "--steps", "9", "--override", "steps") == 0
    assert load_trainer_state(work / "run" / "last.state.safetensors").step == 9
    identity = read_identity(work / "run")
    assert identity.config["steps"] == 9
    assert identity.overrides == ({"step": 6, "fields": ["steps"]},)
    train_steps = [r["step"] for r in read_jsonl(work / "run" / "metrics.jsonl")
                   if r["kind"] == "train"]
    assert train_steps == [2, 4, 6, 8, 9]
    capsys.readouterr()
    assert train(work, "--resume", "--steps", "9") == 0  # the stored config now says 9
    line = error_line(train(work, "--resume", "--steps", "7", "--override", "steps"),
                      *capsys.readouterr())
    assert "the run is at step 9, past steps = 7" in line, line


def test_stored_config_resume_needs_no_config_and_keeps_it(work):
    assert main(["train", "--out", str(work / "run"), "--resume", "-q"]) == 0
    assert load_trainer_state(work / "run" / "last.state.safetensors").step == 6


def test_fresh_run_never_starts_over_or_resumes_an_older_longer_run(work, capsys):
    run = work / "run"
    assert train(work, "--resume", "--steps", "12", "--override", "steps") == 0
    (run / "notes.txt").write_text("mine")
    capsys.readouterr()
    before = snapshot(work)
    line = error_line(train(work, "--steps", "7"), *capsys.readouterr())
    assert "already holds a training run: pass --resume" in line, line
    assert snapshot(work) == before

    old_id = read_identity(run).run_id
    assert train(work, "--steps", "7", "--force") == 0
    assert (run / "notes.txt").read_text() == "mine"  # not a run's file: kept
    assert read_identity(run).run_id != old_id
    steps = sorted(p.name for p in run.glob("step-*.state.safetensors"))
    assert steps == ["step-00000006.state.safetensors", "step-00000007.state.safetensors"]
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 7
    capsys.readouterr()
    # resuming the new run continues it, never the old run's step 12
    assert train(work, "--resume", "--steps", "7") == 0
    assert "steps                        7" in capsys.readouterr().out
    assert load_trainer_state(run / "last.state.safetensors").step == 7


def test_fresh_run_into_a_directory_of_user_files(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "data.csv").write_text("1,2\n")
    line = error_line(train(tmp_path), *capsys.readouterr())
    assert "already holds other files (data.csv)" in line, line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["data.csv"]
    assert train(tmp_path, "--force") == 0
    assert (tmp_path / "run" / "data.csv").read_text() == "1,2\n"


def test_resume_removes_only_our_dead_writers_temp_files(work):
    run = work / "run"
    theirs = [".notes.tmp", ".last.safetensors.tmp", "draft.ssmcompile-tmp",
              ".last.safetensors.notapid-x.ssmcompile-tmp.keep"]
    for name in theirs:
        (run / name).write_text("user data")
    ours_dead = run / ".last.safetensors.999999999-abcd.ssmcompile-tmp"  # pid beyond pid_max
    ours_alive = run / f".metrics.jsonl.{1}-abcd.ssmcompile-tmp"  # init never dies
    ours_dead.write_bytes(b"partial")
    ours_alive.write_bytes(b"partial")
    assert train(work, "--resume", "--steps", "8", "--override", "steps") == 0
    for name in theirs:
        assert (run / name).read_text() == "user data", name
    assert not ours_dead.exists() and ours_alive.exists()


def test_data_are_compared_by_fingerprint_not_by_path(tmp_path, capsys):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(60))
    (tmp_path / "a.txt").write_text(text)
    toml = TINY_TOML.replace("[data]", "[data]\ndataset = 'text'\nseq_len = 16\n"
                             f"path = '{tmp_path / 'a.txt'}'").replace("[model]",
                                                                      "[model]\nnorm = 'layer'")
    (tmp_path / "tiny.toml").write_text(toml)
    assert train(tmp_path) == 0
    (tmp_path / "b.txt").write_text(text)  # the same data elsewhere: resumes
    (tmp_path / "moved.toml").write_text(toml.replace("a.txt", "b.txt"))
    argv = ["train", str(tmp_path / "moved.toml"), "--out", str(tmp_path / "run"), "-q",
            "--resume"]
    assert main(argv) == 0
    (tmp_path / "b.txt").write_text(text.replace("fox", "cat"))  # other data: refused
    capsys.readouterr()
    line = error_line(main(argv), *capsys.readouterr())
    assert "the training data differ from the run's (fingerprint" in line, line
    # a stored config resumes without --data-path only when the data lie inside the run
    line = error_line(main(["train", "--out", str(tmp_path / "run"), "--resume", "-q"]),
                      *capsys.readouterr())
    assert "a.txt' is outside" in line and "pass --data-path again" in line, line
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "-q", "--data-path",
                 str(tmp_path / "a.txt")]) == 0


def test_user_data_fingerprint_refuses_other_tensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 12, 1, generator=gen), torch.randint(0, 3, (80,), generator=gen)

    def data(shift: float) -> TaskData:
        return TaskData("mine", "classify", Split(x[:64] + shift, y[:64]), Split(x[64:], y[64:]),
                        None, n_classes=3, d_input=1)

    cfg = tiny_config(tmp_path / "run", steps=2, schedule=ReductionSchedule.never())
    Trainer(cfg, data=data(0.0)).fit()
    longer = cfg.replace(steps=4)
    with pytest.raises(ConfigError, match="the training data differ"):
        Trainer(longer, data=data(1.0), resume=True, override=["steps"]).fit()
    assert Trainer(longer, data=data(0.0), resume=True, override=["steps"]).fit().steps == 4


def test_legacy_run_without_identity_resumes_and_gets_one(work):
    (work / "run" / "run.json").unlink()
    assert train(work, "--resume", "--steps", "8", "--override", "steps") == 0
    identity = read_identity(work / "run")
    assert identity is not None and len(identity.data) == 64 and identity.config["steps"] == 8


def test_a_failed_start_leaves_no_directory(tmp_path):
    def broken_model():
        raise ShapeError("this model cannot be built")

    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(ShapeError):
        Trainer(tiny_config(out), model=broken_model).fit()
    assert list(tmp_path.iterdir()) == []


def test_pruning_and_resume_ignore_another_runs_checkpoints(tmp_path, base):
    """A complete checkpoint of another run with a higher step (copied in by hand) is neither
    resumed nor pruned in place of this run's own checkpoints."""
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    foreign = "ffffffffffffff:99"
    tensors, meta = load_tensors(run / "step-00000006.state.safetensors")
    body = json.loads(meta["state"])
    body.update(step=99, checkpoint_id=foreign)
    (run / "step-00000099.state.safetensors").write_bytes(
        safetensors.torch.save(tensors, metadata={**meta, "state": json.dumps(body)}))
    tensors, meta = load_tensors(run / "step-00000006.safetensors")
    extra = {**json.loads(meta["extra"]), "checkpoint_id": foreign, "step": "99"}
    (run / "step-00000099.safetensors").write_bytes(
        safetensors.torch.save(tensors, metadata={**meta, "extra": json.dumps(extra)}))

    assert RunDirectory(run).consistent("step-00000099") == 99  # a sound checkpoint...
    own = RunDirectory(run, run_id=read_identity(run).run_id)
    assert own.consistent("step-00000099") is None  # ...of another run
    assert own.resume_stem() in ("last", "step-00000006")
    assert Trainer(tiny_config(run, steps=8), resume=True, override=["steps"]).fit().steps == 8
    names = sorted(p.name for p in run.glob("step-*.state.safetensors"))
    assert names == ["step-00000006.state.safetensors", "step-00000008.state.safetensors",
                     "step-00000099.state.safetensors"]
