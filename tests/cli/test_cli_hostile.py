"""Hostile inputs: every malformed file, unsafe metadata and bad option gives one
``ssmcompile: error:`` line naming the problem, a non-zero exit, no traceback and no new or
changed file anywhere in the working directory."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import safetensors.torch
import torch

from ssmcompile.cli.main import main
from ssmcompile.io import load_tensors, save_checkpoint
from ssmcompile.layers import ModelSpec, build_model

CKPT = "model.safetensors"


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    """A tiny LRU model (blocks n = 6 and 5) saved once for the whole table."""
    torch.manual_seed(0)
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(6, 5), d_output=3, d_input=2)
    model = build_model(spec).eval()
    path = tmp_path_factory.mktemp("base") / CKPT
    return save_checkpoint(path, model, spec=spec.to_dict(), extra={"step": "5"})


def rewrite(path: Path, *, tensors: Callable | None = None, meta: Callable | None = None):
    """Re-save ``path`` with its tensors and/or str metadata changed by the given functions."""
    t, m = load_tensors(path)
    if tensors is not None:
        tensors(t)
    if meta is not None:
        meta(m)
    path.write_bytes(safetensors.torch.save(t, metadata=m))


def set_meta(key: str, value: str) -> Callable[[Path], None]:
    return lambda p: rewrite(p, meta=lambda m: m.__setitem__(key, value))


def edit_json(key: str, fn: Callable) -> Callable[[Path], None]:
    def edit(m: dict) -> None:
        m[key] = json.dumps(fn(json.loads(m[key])))

    return lambda p: rewrite(p, meta=edit)


def edit_tensor(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda p: rewrite(p, tensors=fn)


def set_value(key: str, index, value: float) -> Callable[[Path], None]:
    return edit_tensor(lambda t: t[key].__setitem__(index, value))


def event(**kw) -> dict:
    e = {"step": 5, "block": "blocks.0.ssm", "n": 6, "r": 3, "hsv_kept": [1.0, 0.5, 0.2],
         "bound": 0.3}
    e.update(kw)
    return e


def spec_state_dims(dims: list[int]) -> Callable[[Path], None]:
    return edit_json("spec", lambda s: {**s, "state_dims": dims})


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # "{ckpt}" and "{dir}" are substituted
    expect: str
    corrupt: Callable[[Path], None] | None = None
    code: int = 1


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-16])


def _header_garbage(p: Path) -> None:
    body = b"{not json at all!"
    p.write_bytes(len(body).to_bytes(8, "little") + body)


def _drop(key: str) -> Callable[[Path], None]:
    return lambda p: rewrite(p, meta=lambda m: m.pop(key))


R = ("reduce", "{ckpt}", "--rank", "2")  # the cheapest reduce that gets past option checks
CASES = [
    Case("missing-file", ("inspect", "{dir}/nope.safetensors"), "no such file"),
    Case("directory", ("analyze", "{dir}"), "is a directory, not a checkpoint"),
    Case("empty-file", R, "empty file", lambda p: p.write_bytes(b"")),
    Case("truncated", ("inspect", "{ckpt}"), "truncated", _truncate),
    Case("random-bytes", ("analyze", "{ckpt}"), "not a safetensors file",
         lambda p: p.write_bytes(random.Random(0).randbytes(4096))),
    Case("header-not-json", R, "header is not valid JSON", _header_garbage),
    Case("metadata-json-garbage", ("inspect", "{ckpt}"), "metadata 'spec' is not valid JSON",
         set_meta("spec", "{oops")),
    Case("metadata-missing-key", ("analyze", "{ckpt}"), "metadata lacks 'history'",
         _drop("history")),
    Case("metadata-wrong-type", R, "'history' must be a JSON list",
         set_meta("history", '{"a": 1}')),
    Case("metadata-extra-key", ("inspect", "{ckpt}"), "unexpected metadata keys: __import__",
         set_meta("__import__", "os")),
    Case("newer-format", ("inspect", "{ckpt}"), "format_version 2 is newer",
         set_meta("format_version", "2")),
    Case("unknown-builder", ("analyze", "{ckpt}"), "unknown model builder 'os.system'",
         set_meta("builder", '"os.system"')),
    Case("spec-unknown-key", R, "unknown ModelSpec keys: evil",
         edit_json("spec", lambda s: {**s, "evil": "__import__('os')"})),
    Case("spec-bad-value", ("inspect", "{ckpt}"), "layer must be one of",
         edit_json("spec", lambda s: {**s, "layer": "mamba"})),
    Case("history-wrong-n", ("inspect", "{ckpt}"), "resizes from n=9 but the block has n=6",
         edit_json("history", lambda h: [event(n=9)])),
    Case("history-unknown-block", ("analyze", "{ckpt}"), "no such block",
         edit_json("history", lambda h: [event(block="blocks.7.ssm")])),
    Case("history-not-replayed", R, "history does not replay to spec",
         edit_json("history", lambda h: [event()])),
    Case("spec-without-history", ("inspect", "{ckpt}"), "history does not replay to spec",
         spec_state_dims([3, 5])),
    Case("nan-weight", ("inspect", "{ckpt}"), "'head.bias' contains NaN or Inf",
         set_value("head.bias", 0, float("nan"))),
    Case("inf-weight", ("analyze", "{ckpt}"), "'blocks.1.ssm.C_re' contains NaN or Inf",
         set_value("blocks.1.ssm.C_re", (0, 0), float("inf"))),
    Case("unstable-pole", R, "block blocks.0.ssm is unstable",  # |λ| = exp(-e^-100) = 1.0
         set_value("blocks.0.ssm.nu_log", 2, -100.0)),
    Case("wrong-shape", ("inspect", "{ckpt}"), "'head.weight' has shape (3, 5)",
         edit_tensor(lambda t: t.__setitem__("head.weight", torch.zeros(3, 5)))),
    Case("missing-tensor", ("analyze", "{ckpt}"), "missing tensor 'head.bias'",
         edit_tensor(lambda t: t.pop("head.bias"))),
    Case("extra-tensor", R, "unexpected tensor 'evil'",
         edit_tensor(lambda t: t.__setitem__("evil", torch.zeros(1)))),
    Case("int-weight", ("inspect", "{ckpt}"), "'head.bias' has dtype torch.int64",
         edit_tensor(lambda t: t.__setitem__("head.bias", torch.zeros(3, dtype=torch.int64)))),
    Case("rank-0", ("reduce", "{ckpt}", "--rank", "0"), "--rank must be >= 1"),
    Case("rank-ge-n", ("reduce", "{ckpt}", "--rank", "6"),
         "--rank 6 is not below the state dim of block blocks.0.ssm (n=6)"),
    Case("rank-300", ("reduce", "{ckpt}", "--rank", "300"), "block blocks.0.ssm (n=6)"),
    Case("tau-0", ("reduce", "{ckpt}", "--tau", "0"), "--tau must be in (0, 1), got 0"),
    Case("tau-1.5", ("reduce", "{ckpt}", "--tau", "1.5"), "--tau must be in (0, 1), got 1.5"),
    Case("budget-0", ("reduce", "{ckpt}", "--budget", "0"), "--budget must be in (0, 1]"),
    Case("fraction-2", ("reduce", "{ckpt}", "--fraction", "2"), "--fraction must be in (0, 1]"),
    Case("no-rule", ("reduce", "{ckpt}"), "choose one of --rank, --tau"),
    Case("block-syntax", ("reduce", "{ckpt}", "--block", "blocks.0.ssm:3"),
         "--block expects NAME=R, got 'blocks.0.ssm:3'"),
    Case("block-rank-not-int", ("reduce", "{ckpt}", "--block", "blocks.0.ssm=x"),
         "rank 'x' is not an integer"),
    Case("block-unknown", ("reduce", "{ckpt}", "--tau", "0.1", "--block", "blocks.9.ssm=2"),
         "no block named 'blocks.9.ssm' (blocks: blocks.0.ssm, blocks.1.ssm)"),
    Case("block-rank-ge-n", ("reduce", "{ckpt}", "--block", "blocks.1.ssm=5"),
         "--block blocks.1.ssm=5: rank must be in 1..4"),
    Case("output-dir-missing", R + ("-o", "{dir}/no/such/out.safetensors"),
         "output directory does not exist"),
    Case("output-parent-is-file", R + ("-o", "{ckpt}/out.safetensors"),
         "output directory is not a directory"),
    Case("output-is-directory", R + ("-o", "{dir}"), "output path is a directory"),
    Case("output-exists", R + ("-o", "{dir}/old.safetensors"), "output exists",
         lambda p: (p.parent / "old.safetensors").write_bytes(b"keep me")),
    Case("output-is-input", R + ("-o", "{ckpt}", "--force"),
         "refusing to overwrite the input checkpoint"),
    Case("plot-dir-missing", ("analyze", "{ckpt}", "--plot", "{dir}/no/hsv.png"),
         "output directory does not exist"),
    Case("usage-two-rules", ("reduce", "{ckpt}", "--rank", "2", "--tau", "0.1"),
         "not allowed with argument", code=2),
    Case("usage-rank-not-int", ("reduce", "{ckpt}", "--rank", "two"), "invalid int value",
         code=2),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden temp files included) → content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def assert_clean_error(code: int, out: str, err: str, expect: str, want_code: int) -> None:
    assert code == want_code != 0
    assert "Traceback" not in err and "Traceback" not in out
    assert out == ""
    if want_code == 2:  # argparse usage error
        assert expect in err and "usage:" in err
        return
    lines = [line for line in err.splitlines() if line.startswith("ssmcompile: error:")]
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]


def prepare_case(case: Case, base: Path, tmp_path: Path) -> list[str]:
    ckpt = tmp_path / CKPT
    shutil.copy(base, ckpt)
    if case.corrupt is not None:
        case.corrupt(ckpt)
    return [a.format(ckpt=ckpt, dir=tmp_path) for a in case.argv]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_in_process(case, base_checkpoint, tmp_path, capsys):
    argv = prepare_case(case, base_checkpoint, tmp_path)
    before = snapshot(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert_clean_error(code, out, err, case.expect, case.code)
    assert snapshot(tmp_path) == before


def test_table_is_large_enough():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
