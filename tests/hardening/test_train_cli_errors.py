"""``ssmcompile train`` on hostile options, config files and run directories: one
``ssmcompile: error:`` line naming the problem, a non-zero exit, no traceback, and nothing
created or changed on disk (the run directory of a refused start is never made)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import safetensors.torch
import torch
from train_run_helpers import TINY_TOML, error_line, snapshot

from ssmcompile.cli.main import main
from ssmcompile.io import load_tensors
from ssmcompile.train.run_dir import RunLock


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished tiny run (6 steps) made by the CLI, copied by the cases that need one."""
    root = tmp_path_factory.mktemp("base")
    (root / "tiny.toml").write_text(TINY_TOML)
    assert main(["train", str(root / "tiny.toml"), "--out", str(root / "run"), "-q"]) == 0
    return root / "run"


def toml(text: str | bytes) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "c.toml").write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", str(d / "c.toml"), "--out", str(d / "run"), "-q"]

    return make


def flags(*extra: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "tiny.toml").write_text(TINY_TOML)
        return ["train", str(d / "tiny.toml"), "--out", str(d / "run"), "-q", *extra]

    return make


def edit_run_json(fn: Callable[[dict], None]) -> Callable[[Path, Path], list[str]]:
    """Resume (config from the run) after ``fn`` edited the stored config in run.json."""
    def make(d: Path, base: Path) -> list[str]:
        shutil.copytree(base, d / "run")
        body = json.loads((d / "run" / "run.json").read_text())
        fn(body["config"])
        (d / "run" / "run.json").write_text(json.dumps(body))
        return ["train", "--out", str(d / "run"), "--resume", "-q"]

    return make


def raw_run_json(text: str) -> Callable[[Path, Path], list[str]]:
    def make(d: Path, base: Path) -> list[str]:
        shutil.copytree(base, d / "run")
        (d / "run" / "run.json").write_text(text)
        return ["train", "--out", str(d / "run"), "--resume", "-q"]

    return make


def legacy_config(text: str) -> Callable[[Path, Path], list[str]]:
    """A run from before run.json whose checkpoint holds ``text`` as its stored config."""
    def make(d: Path, base: Path) -> list[str]:
        shutil.copytree(base, d / "run")
        (d / "run" / "run.json").unlink()
        last = d / "run" / "last.safetensors"
        tensors, meta = load_tensors(last)
        extra = json.loads(meta["extra"])
        extra["config"] = text
        meta["extra"] = json.dumps(extra)
        last.write_bytes(safetensors.torch.save(tensors, metadata=meta))
        return ["train", "--out", str(d / "run"), "--resume", "-q"]

    return make


def in_run(fn: Callable[[Path], list[str]]) -> Callable[[Path, Path], list[str]]:
    def make(d: Path, base: Path) -> list[str]:
        shutil.copytree(base, d / "run")
        return fn(d)

    return make


def user_file_in_out(d: Path) -> list[str]:
    (d / "run").mkdir()
    (d / "run" / "notes.txt").write_text("mine")
    return flags()(d)


def out_is_file(d: Path) -> list[str]:
    (d / "run").write_text("a file")
    return flags()(d)


def out_named(name: str, resume: bool = False) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "tiny.toml").write_text(TINY_TOML)
        (d / "a-file").write_text("x")
        (d / "loop").symlink_to(d / "loop")
        argv = ["train", str(d / "tiny.toml"), "--out", str(d / name), "-q"]
        return [*argv[:1], *argv[2:], "--resume"] if resume else argv

    return make


def data_outside(config: dict) -> None:
    config["data"].update(dataset="text", path="/etc/hostname-no-such-text")
    config["model"]["norm"] = "layer"


def compile_with(backend: str) -> Callable[[dict], None]:
    return lambda c: c.update(compile="on", compile_backend=backend)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable  # (tmp_path) or (tmp_path, base_run) -> argv
    expect: str
    needs_run: bool = False


CASES = [
    Case("device-cuda", flags("--device", "cuda"), "no CUDA device is available"),
    Case("device-cuda-x", flags("--device", "cuda:x"), "device must be cpu, cuda or cuda:N"),
    Case("device-tpu", flags("--device", "tpu"), "device must be cpu, cuda or cuda:N"),
    Case("tau-2", flags("--tau", "2"), "--tau must be in (0, 1), got 2"),
    Case("tau-0", flags("--tau", "0"), "--tau must be in (0, 1), got 0"),
    Case("tau-nan", flags("--tau", "nan"), "--tau must be in (0, 1), got nan"),
    Case("seed-2**70", flags("--seed", str(2**70)), "seed must be <= 4294967295"),
    Case("seed-negative", flags("--seed", "-1"), "seed must be >= 0, got -1"),
    Case("threads-0", flags("--threads", "0"), "threads must be >= 1, got 0"),
    Case("steps-huge", flags("--steps", str(10**12)), "steps must be <= 1000000000"),
    Case("override-without-resume", flags("--override", "steps"), "it needs --resume"),
    Case("override-unknown", flags("--resume", "--override", "stepz"),
         "--override stepz: no such config field"),
    Case("resume-and-force", flags("--resume", "--force"), "give one of them"),
    Case("resume-nothing", flags("--resume"), "nothing to resume"),
    Case("d_model-2**63", toml(f"[model]\nd_model = {2**63}"), "model.d_model must be <= 65536"),
    Case("state_dim-huge", toml("[model]\nstate_dim = 1000000"), "model.state_dim must be <= "),
    Case("too-many-params", toml("[model]\nd_model = 65536\nstate_dim = 65536"),
         "model too large"),
    Case("n_blocks-huge", toml("[model]\nn_blocks = 10000000"), "model.n_blocks must be <= 1024"),
    Case("lr-nan", toml("[optim]\nlr = nan"), "optim.lr must be a finite number"),
    Case("float-overflow", toml(f"[optim]\nlr = {10**400}"), "too large for a float"),
    Case("toml-int-5000-digits", toml("steps = " + "9" * 5000), "c.toml: invalid TOML"),
    Case("batch-huge", toml(f"[data]\nbatch_size = {2**40}"), "data.batch_size must be <= "),
    Case("every-1-of-1e9", toml("steps = 1000000000\n[schedule]\nevery = 1\nend = 1.0"),
         "places 999999999 events"),
    Case("schedule-past-end", toml("steps = 5\n[schedule]\nsteps = [9]"),
         "reduction step 9 is not before the end of the run (5 steps)"),
    Case("backend-not-a-name", toml("compile_backend = 'os.system(1); x'"),
         "compile_backend is not a torch.compile backend name"),
    Case("toml-invalid-utf8", toml(b"steps = 3\n# \xff\xfe\n"), "not UTF-8 text"),
    Case("toml-nested", toml("a = " + "[" * 5000 + "]" * 5000), "c.toml: invalid TOML"),
    Case("toml-huge", toml("# " + "x" * (1 << 20) + "\n"), "a config file is at most"),
    Case("toml-nul-in-string", toml('pipeline = "a\\u0000b"'), "pipeline contains a NUL"),
    Case("out-is-file", out_is_file, "output path is not a directory"),
    Case("out-name-too-long", out_named("x" * 300), "as the run directory: File name too long"),
    Case("out-name-too-long-resume", out_named("x" * 300, resume=True),
         "as the run directory: File name too long"),
    Case("out-symlink-loop", out_named("loop/run"), "as the run directory: Too many levels"),
    Case("out-under-a-file", out_named("a-file/run"), "cannot create the run directory"),
    Case("out-holds-user-files", user_file_in_out, "already holds other files (notes.txt)"),
    Case("out-holds-a-run", in_run(flags()), "already holds a training run: pass --resume",
         needs_run=True),
    Case("stored-not-json", raw_run_json("{oops"), "run.json: not a run identity file (not "
         "valid JSON)", needs_run=True),
    Case("stored-config-list", raw_run_json(json.dumps(
        {"format": "ssmcompile-run", "version": 1, "run_id": "0123456789abcd",
         "builder": "ssm-model", "config": [], "data": ""})),
         "config is not a table", needs_run=True),
    Case("stored-unknown-key", edit_run_json(lambda c: c.update(evil=1)),
         "unknown config key evil", needs_run=True),
    Case("stored-bad-type", edit_run_json(lambda c: c["model"].update(d_model="wide")),
         "model.d_model: expected int", needs_run=True),
    Case("stored-d_model-huge", edit_run_json(lambda c: c["model"].update(d_model=2**63)),
         "model.d_model must be <= 65536", needs_run=True),
    Case("stored-unknown-backend", edit_run_json(compile_with("no_such_backend")),
         "compile_backend 'no_such_backend' is not a torch.compile backend", needs_run=True),
    Case("stored-data-path-outside", edit_run_json(data_outside),
         "is outside", needs_run=True),
    Case("legacy-config-not-json", legacy_config("{oops"), "stored config is not valid JSON",
         needs_run=True),
    Case("legacy-config-list", legacy_config("[]"), "stored config is not a table",
         needs_run=True),
]


def prepare(case: Case, tmp_path: Path, base_run: Path) -> list[str]:
    return case.make(tmp_path, base_run) if case.needs_run else case.make(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_train_refuses_in_one_line_and_leaves_the_disk_alone(case, tmp_path, capsys, request):
    if case.id == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = request.getfixturevalue("base_run") if case.needs_run else None
    argv = prepare(case, tmp_path, base)
    before = snapshot(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    line = error_line(code, out, err)
    assert case.expect in line, line
    assert len(line) < 600
    assert snapshot(tmp_path) == before


def test_stored_data_path_is_not_opened(tmp_path, base_run, capsys, monkeypatch):
    """The refusal comes before any file is read: opening the path would have said 'no such
    text file' (and a FIFO there would have blocked)."""
    argv = edit_run_json(data_outside)(tmp_path, base_run)
    opened: list[str] = []
    real_read = Path.read_text

    def read_text(self, *args, **kwargs):
        opened.append(str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert main(argv) == 1
    assert "pass --data-path again" in capsys.readouterr().err
    assert not [p for p in opened if "hostname" in p]


def test_second_trainer_on_a_locked_directory(tmp_path, base_run, capsys):
    shutil.copytree(base_run, tmp_path / "run")
    argv = ["train", "--out", str(tmp_path / "run"), "--resume", "-q"]
    lock = RunLock(tmp_path / "run")
    lock.acquire()  # what a running trainer holds
    try:
        before = snapshot(tmp_path)
        line = error_line(main(argv), *capsys.readouterr())
        assert "another trainer is running in" in line, line
        assert snapshot(tmp_path) == before
    finally:
        lock.release()
    assert main(argv) == 0  # the run is finished: resuming it is a no-op that succeeds
    assert "steps                        6" in capsys.readouterr().out


def test_read_only_parent_is_one_line(tmp_path, capsys):
    if os.geteuid() != 0:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
    else:  # root writes anywhere a mode allows; sysfs refuses even root
        parent = Path("/sys/kernel")
        if not parent.is_dir() or os.access(parent, os.W_OK) and _can_mkdir(parent):
            pytest.skip("no read-only directory available")
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    argv = ["train", str(tmp_path / "tiny.toml"), "--out", str(parent / "run"), "-q"]
    line = error_line(main(argv), *capsys.readouterr())
    assert "cannot create the run directory" in line, line
    assert not (parent / "run").exists()
    line = error_line(main([*argv[:3], str(parent), "-q", "--force"]), *capsys.readouterr())
    assert "cannot write to" in line or "cannot remove" in line, line


def _can_mkdir(parent: Path) -> bool:
    try:
        (parent / ".ssmcompile-probe").mkdir()
    except OSError:
        return False
    (parent / ".ssmcompile-probe").rmdir()
    return True


def test_table_covers_the_issue(base_run):
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
