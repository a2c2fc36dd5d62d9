"""One-line errors (issue 17, item 5, the parts outside ``train``): usage errors are ONE
``ssmcompile: error: <subcommand>: <what>`` line with exit code 2 (argparse's multi-line usage
only on ``--help``); a seed or probe length out of range, a probe too big for memory, and an
export onto a full or read-only disk are one line with exit code 1; none leaves a file."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from ssmcompile.cli import _common
from ssmcompile.cli.main import main

CKPT = "model.safetensors"  # the name conftest.py gives the copied checkpoint


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv: list[str], root: Path, code: int, *expect: str) -> str:
    before = snapshot(root)
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, (got, err)
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssmcompile: error: "), err
    for text in expect:
        assert text in lines[0], lines[0]
    assert snapshot(root) == before
    return lines[0]


USAGE = [
    (["reduce", "{ckpt}", "--rank", "two"],
     "reduce: argument --rank: invalid int value: 'two' (usage: ssmcompile reduce --help)"),
    (["reduce", "{ckpt}", "--rank", "2", "--tau", "0.1"],
     "reduce: argument --tau: not allowed with argument --rank"),
    (["export", "{ckpt}"], "export: the following arguments are required: -o/--output"),
    (["export", "{ckpt}", "-o", "x.onnx", "--device", "tpu"],
     "export: argument --device: invalid choice: 'tpu'"),
    (["analyze", "{ckpt}", "--seed", "2**70"], "analyze: argument --seed: invalid int value"),
    (["analyze", "{ckpt}", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["nosuch"], "argument COMMAND: invalid choice: 'nosuch'"),
    ([], "the following arguments are required: COMMAND (usage: ssmcompile --help)"),
    (["inspect", "{ckpt}", "--bogus\x1b[2J" + "y" * 5000], "\\x1b[2J"),  # escaped, truncated
]


@pytest.mark.parametrize(("argv", "expect"), USAGE, ids=[" ".join(a)[:40] for a, _ in USAGE])
def test_usage_errors_are_one_line_with_exit_2(argv, expect, ckpt, capsys):
    line = one_line_error(capsys, [a.format(ckpt=ckpt) for a in argv], ckpt.parent, 2, expect)
    assert len(line) < 600 and "\x1b" not in line


def test_help_still_prints_the_usage(capsys):
    assert main(["reduce", "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: ssmcompile reduce") and "--probe-length" in out and err == ""
    assert main(["--help"]) == 0
    assert "analyze" in capsys.readouterr().out


def test_standalone_subcommand_usage_error_is_one_line(ckpt, capsys):
    from ssmcompile.cli import export as export_cli

    assert export_cli.main([str(ckpt)]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == ["ssmcompile: error: export: the following arguments are "
                                "required: -o/--output (usage: ssmcompile export --help)"]


RANGE = [
    (["analyze", "{ckpt}", "--seed", str(2**70)], "--seed must be an int in [0, 2**64 - 1]"),
    (["analyze", "{ckpt}", "--seed", "-1"], "--seed must be an int in [0, 2**64 - 1], got -1"),
    (["reduce", "{ckpt}", "--rank", "2", "--probe-length", "10000000"],
     "--probe-length must be an int in [1, 65536], got 10000000"),
    (["analyze", "{ckpt}", "--probe-length", "0"], "--probe-length must be an int in [1, 65536]"),
    (["reduce", "{ckpt}", "--rank", "2", "--seed", str(2**64)], "--seed must be an int"),
    (["export", "{ckpt}", "-o", "{dir}/x.onnx", "--length", "1000000"],
     "export length must be an int in [2, 4096], got 1000000"),
]


@pytest.mark.parametrize(("argv", "expect"), RANGE, ids=[" ".join(a[2:])[:40] for a, _ in RANGE])
def test_out_of_range_numbers_are_one_line(argv, expect, ckpt, capsys):
    args = [a.format(ckpt=ckpt, dir=ckpt.parent) for a in argv]
    one_line_error(capsys, args, ckpt.parent, 1, expect)


def test_largest_seed_still_works(ckpt, capsys):
    assert main(["analyze", str(ckpt), "--json", "--seed", str(2**64 - 1),
                 "--probe-length", "8", "-q"]) == 0
    assert '"seed": 18446744073709551615' in capsys.readouterr().out


def test_probe_memory_estimate():
    spec = {"d_model": 4, "d_input": 2}
    dims = {"blocks.0.ssm": 6, "blocks.1.ssm": 5}
    # per step: d_input 2 + per block (16 * widest 6 + 4n) = 2 + 120 + 116 = 238 float64
    assert _common.probe_bytes(spec, dims, 1000) == 8 * 1000 * 238
    big = {"d_model": 4096}
    many = {f"layers.{i}.mixer": 16 for i in range(48)}
    assert _common.probe_bytes(big, many, 65_536) > _common.PROBE_MEMORY_LIMIT
    # the default probe of a large model stays allowed
    assert _common.probe_bytes(big, many, 64) < _common.PROBE_MEMORY_LIMIT


def test_probe_too_big_for_memory_is_refused_before_loading(ckpt, capsys, monkeypatch):
    monkeypatch.setattr(_common, "PROBE_MEMORY_LIMIT", 8 * 1000 * 238 - 1)
    one_line_error(capsys, ["reduce", str(ckpt), "--rank", "2", "--probe-length", "1000"],
                   ckpt.parent, 1, "--probe-length 1000 would need about", "use a shorter")
    one_line_error(capsys, ["analyze", str(ckpt), "--probe-length", "1000"], ckpt.parent, 1,
                   "would need about 0.0 GB")
    assert main(["analyze", str(ckpt), "--probe-length", "999", "--json", "-q"]) == 0
    capsys.readouterr()


def _failing(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_export_onto_a_full_disk_is_one_line(ckpt, capsys, monkeypatch):
    from ssmcompile.export import onnx_file

    monkeypatch.setattr(onnx_file, "_write_model", _failing(errno.ENOSPC))
    one_line_error(capsys, ["export", str(ckpt), "-o", str(ckpt.with_name("m.onnx")), "-q"],
                   ckpt.parent, 1, "cannot write", "m.onnx: No space left on device")


def test_export_onto_a_read_only_disk_is_one_line(ckpt, capsys, monkeypatch):
    # As root a chmod'ed directory stays writable: the filesystem's answer is simulated, for
    # our temp file only (the exporter makes temp files of its own).
    from ssmcompile.export import onnx_file
    from ssmcompile.io import atomic

    def read_only_make_temp(out):
        with monkeypatch.context() as patch:
            patch.setattr(atomic.tempfile, "mkstemp", _failing(errno.EROFS))
            return atomic.make_temp(out)

    monkeypatch.setattr(onnx_file, "make_temp", read_only_make_temp)
    one_line_error(capsys, ["export", str(ckpt), "-o", str(ckpt.with_name("m.onnx")), "-q"],
                   ckpt.parent, 1, "cannot write to", "Read-only file system")
