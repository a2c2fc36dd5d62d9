"""No command's output may replace its input (issue 17, item 3 and "every command checks"):
the same path, a hard link, a symlink either way, and the ``.onnx.data`` weights file beside an
ONNX output are all refused with one ``ssmcompile: error:`` line, before any work, and nothing
in the directory changes. And a write removes the temp files a killed writer to the same
place left, but never a file that is not ours."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmcompile.cli.main import main
from ssmcompile.io.atomic import check_not_input, same_file

CKPT = "model.safetensors"  # the name conftest.py gives the copied checkpoint


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` → content hash (symlinks by their target, not followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(capsys, argv: list[str], root: Path, *expect: str) -> None:
    before = snapshot(root)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssmcompile: error: "), err
    for text in ("refusing to overwrite the input checkpoint", *expect):
        assert text in lines[0], lines[0]
    assert snapshot(root) == before


# (name, how the other path is made from the checkpoint, argv with {ckpt} and {other})
CASES = [
    ("export-same-path", None, ["export", "{ckpt}", "-o", "{ckpt}"], "ONNX output"),
    ("export-hard-link", "hard", ["export", "{ckpt}", "-o", "{other}"], "ONNX output"),
    ("export-symlink-out", "sym", ["export", "{ckpt}", "-o", "{other}"], "ONNX output"),
    ("export-symlink-in", "sym", ["export", "{other}", "-o", "{ckpt}"], "ONNX output"),
    ("export-dotdot-path", "dotdot", ["export", "{ckpt}", "-o", "{other}"], "ONNX output"),
    ("reduce-hard-link", "hard", ["reduce", "{ckpt}", "--rank", "2", "-o", "{other}", "--force"],
     "reduced checkpoint"),
    ("reduce-symlink-out", "sym",
     ["reduce", "{ckpt}", "--rank", "2", "-o", "{other}", "--force"], "reduced checkpoint"),
    ("reduce-symlink-in", "sym",
     ["reduce", "{other}", "--rank", "2", "-o", "{ckpt}", "--force"], "reduced checkpoint"),
    ("analyze-plot-same-path", None, ["analyze", "{ckpt}", "--plot", "{ckpt}"], "the plot"),
    ("analyze-plot-hard-link", "hard", ["analyze", "{ckpt}", "--plot", "{other}"], "the plot"),
]


def _other(ckpt: Path, how: str | None) -> Path:
    other = ckpt.with_name("other.bin")
    if how == "hard":
        os.link(ckpt, other)
    elif how == "sym":
        other.symlink_to(ckpt.name)
    elif how == "dotdot":
        sub = ckpt.parent / "sub"
        sub.mkdir()
        other = sub / ".." / ckpt.name
    return other


@pytest.mark.parametrize(("name", "how", "argv", "expect"), CASES, ids=[c[0] for c in CASES])
def test_an_output_never_replaces_an_input(name, how, argv, expect, ckpt, capsys):
    other = _other(ckpt, how)
    args = [a.format(ckpt=ckpt, other=other) for a in argv]
    refused(capsys, args, ckpt.parent, expect)  # the message names which output collided


def test_onnx_weights_file_beside_the_output_is_checked_too(ckpt, capsys):
    # Large models write their weights to <out>.data: that file must not be the input either.
    data_named = ckpt.with_name("deploy.onnx.data")
    ckpt.rename(data_named)
    refused(capsys, ["export", str(data_named), "-o", str(ckpt.with_name("deploy.onnx"))],
            ckpt.parent, "the ONNX weights file")


def test_same_file_rules(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"x")
    b = tmp_path / "b"
    b.write_bytes(b"x")  # equal content is not the same file
    (tmp_path / "link").symlink_to("a")
    os.link(a, tmp_path / "hard")
    assert same_file(a, tmp_path / "link") and same_file(tmp_path / "hard", a)
    assert same_file(tmp_path / "new", tmp_path / "." / "new")  # neither exists yet
    assert not same_file(a, b) and not same_file(a, tmp_path / "new")
    (tmp_path / "loop").symlink_to("loop")
    assert not same_file(tmp_path / "loop", a)  # a symlink loop is not an error
    assert check_not_input(b, [None, a]) == b


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_export_removes_stale_temps_of_killed_writers_only(ckpt, capsys):
    out = ckpt.with_name("x.onnx")
    dead = _dead_pid()
    stale = ckpt.with_name(f".x.onnx.{dead}-abc.ssmcompile-tmp")
    other_target = ckpt.with_name(f".y.onnx.{dead}-abc.ssmcompile-tmp")
    live = ckpt.with_name(f".x.onnx.{os.getpid()}-xyz.ssmcompile-tmp")  # a running writer's
    users = [ckpt.with_name(".x.onnx.tmp"), ckpt.with_name(".x.onnx.123-abc.tmp")]
    for p in (stale, other_target, live, *users):
        p.write_bytes(b"partial")
    assert main(["export", str(ckpt), "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert out.stat().st_size > 1000 and not stale.exists()
    assert other_target.exists() and live.exists()  # another target's, and a live writer's
    assert all(p.read_bytes() == b"partial" for p in users)  # not named like ours: kept
    leftovers = {p.name for p in ckpt.parent.iterdir()} - {CKPT, "x.onnx"}
    assert leftovers == {other_target.name, live.name, *(p.name for p in users)}
