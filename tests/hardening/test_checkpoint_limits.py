"""Issue 17, items 1, 2 and the checkpoint cases of 5: a small file cannot ask for large work,
dtypes come from an allow-list (one floating dtype per model), and ``inspect`` prints strings
from the file escaped and truncated. Each case: one ``ssmcompile: error:`` line (or a clean
result), fast, no traceback, no file touched."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from ssmcompile.cli.main import main
from ssmcompile.errors import CheckpointError
from ssmcompile.io import ReductionEvent, load_checkpoint, replay, save_checkpoint
from ssmcompile.io.builders import SSM_MODEL_BUILDER
from ssmcompile.io.limits import MAX_BLOCKS, check_probe
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.layers.spec import SpecError

FAST_S = 3.0  # a refusal reads only the header; the unbounded code took 14 s to minutes


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(6, 5), d_output=3, d_input=2)
    path = tmp_path_factory.mktemp("base") / "model.safetensors"
    return save_checkpoint(path, build_model(spec).eval(), spec=spec.to_dict())


def rewrite(base: Path, out: Path, tensors=None, **meta) -> Path:
    """``base`` with its tensors (a function of them) and/or metadata values replaced."""
    t = safetensors.torch.load(base.read_bytes())
    with open(base, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        m = json.loads(f.read(n))["__metadata__"]
    for k, v in meta.items():
        m[k] = v if isinstance(v, str) else json.dumps(v)
    out.write_bytes(safetensors.torch.save(tensors(t) if tensors else t, metadata=m))
    return out


def spec_of(base: Path) -> dict:
    return json.loads(safetensors.safe_open(base, "pt").metadata()["spec"])


def run(argv: list[str], capsys, folder: Path) -> tuple[int, str, str, float]:
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
              if p.is_file()}
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
             if p.is_file()}
    assert after == before, "a command changed or wrote a file"
    return code, out, err, seconds


def assert_refused(argv: list[str], expect: str, capsys, folder: Path) -> str:
    code, out, err, seconds = run(argv, capsys, folder)
    assert code == 1 and out == "" and "Traceback" not in err, err[-2000:]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssmcompile: error: "), err[-2000:]
    assert expect in lines[0], lines[0]
    assert len(lines[0]) < 700 and lines[0].isprintable()
    assert seconds < FAST_S, f"{seconds:.1f} s"
    return lines[0]


REDUCE = ("--rank", "1", "--probe-length", "8")


def both(path: Path, tmp_path: Path) -> list[list[str]]:
    return [["-q", "inspect", str(path)],
            ["-q", "reduce", str(path), *REDUCE, "-o", str(tmp_path / "out.safetensors")]]


# ---- item 1: sizes bounded by the file ----------------------------------------------------


@pytest.mark.parametrize("case, change, expect", [
    ("dims-1e9", {"state_dims": [10**9]}, "state_dims[0] = 1000000000 but the largest tensor"),
    ("dims-1e5-blocks", {"state_dims": [1] * 100_000}, "more than 65536 values"),
    ("blocks-over-cap", {"state_dims": [1] * (MAX_BLOCKS + 1)},
     f"spec has {MAX_BLOCKS + 1} blocks (at most {MAX_BLOCKS})"),
    ("blocks-without-tensors", {"state_dims": [6, 5, 4]}, "block 'blocks.2.ssm' has no tensors"),
    ("d-model-2-63", {"d_model": 2**63}, "holds the number 9223372036854775808"),
    ("d-model-2-40", {"d_model": 2**40}, "d_model must be a positive int <= 2147483648"),
    ("d-model-1e6", {"d_model": 10**6}, "d_model = 1000000 but the largest tensor in the file"),
    ("vocab-huge", {"d_input": None, "vocab_size": 10**7}, "vocab_size = 10000000"),
])
def test_spec_sizes_bounded_by_the_file(case, change, expect, base, tmp_path, capsys):
    s = {**spec_of(base), **change}
    bad = rewrite(base, tmp_path / f"{case}.safetensors", spec=s, initial_spec=s)
    for argv in both(bad, tmp_path):
        line = assert_refused(argv, expect, capsys, tmp_path)
        assert "enforce fail" not in line and "alloc" not in line  # no C++ message


def test_architecture_compared_before_allocating(base, tmp_path, capsys):
    # every size is within the largest tensor, but the model it names is not the file's
    s = {**spec_of(base), "state_dims": [24, 5]}
    bad = rewrite(base, tmp_path / "bigger.safetensors", spec=s, initial_spec=s)
    assert_refused(["-q", "inspect", str(bad)], "has shape (6, 4), the architecture needs (24, 4)",
                   capsys, tmp_path)


def test_selective_lm_layers_capped(base, tmp_path, capsys):
    lm = {"vocab_size": 8, "d_model": 4, "n_layers": 10**7, "structure": "mamba2",
          "d_state": 4, "expand": 2, "d_conv": 4, "head_dim": 4, "n_groups": 1,
          "layer_d_states": []}
    bad = rewrite(base, tmp_path / "lm.safetensors", builder='"selective-lm"', spec=lm,
                  initial_spec=lm, history=[])
    for argv in both(bad, tmp_path):
        assert_refused(argv, "n_layers = 10000000 exceeds 1024", capsys, tmp_path)


def event(block: str, n: int, r: int, step: int = 1) -> dict:
    return {"step": step, "block": block, "n": n, "r": r, "hsv_kept": [1.0] * r, "bound": 0.1}


def test_issue_history_6000_by_6000_refused_fast(base, tmp_path, capsys):
    s = spec_of(base)
    bad = rewrite(base, tmp_path / "h.safetensors", spec={**s, "state_dims": [1] * 6000},
                  initial_spec={**s, "state_dims": [2] * 6000},
                  history=[event(f"blocks.{i}.ssm", 2, 1) for i in range(6000)])
    assert_refused(["-q", "inspect", str(bad)], "spec has 6000 blocks", capsys, tmp_path)


def test_history_replay_is_linear():
    # 1024 blocks x 20480 events: one spec rebuild per event made this minutes long
    spec = ModelSpec(layer="lru", d_model=2, state_dims=(64,) * MAX_BLOCKS, d_output=1,
                     d_input=1).to_dict()
    history = [ReductionEvent(k, f"blocks.{b}.ssm", 64 - k, 63 - k, (1.0,), 0.1)
               for k in range(20) for b in range(MAX_BLOCKS)]
    t0 = time.perf_counter()
    final = replay(SSM_MODEL_BUILDER, spec, history)
    assert time.perf_counter() - t0 < FAST_S
    assert final["state_dims"] == [44] * MAX_BLOCKS


def test_history_length_capped(base, tmp_path, capsys):
    bad = rewrite(base, tmp_path / "long.safetensors",
                  history=[event("blocks.0.ssm", 6, 5)] * 70_000)
    assert_refused(["-q", "inspect", str(bad)], "history has 70000 events (at most 65536)",
                   capsys, tmp_path)


def test_model_spec_refuses_sizes_torch_cannot_allocate():
    with pytest.raises(SpecError, match="d_model must be a positive int <= 2147483648"):
        ModelSpec(layer="lru", d_model=2**63, state_dims=(2,), d_output=1, d_input=1)


def test_probe_cost_bound():
    check_probe(64, 100)  # the default probe through a small model
    with pytest.raises(CheckpointError, match="probe length 10000000 is too long"):
        check_probe(10_000_000, 4)


# ---- item 2: dtypes -------------------------------------------------------------------------


def convert(names: list[str] | None, dtype: torch.dtype):
    def edit(t: dict) -> dict:
        return {k: v.to(dtype) if v.is_floating_point() and (names is None or k in names) else v
                for k, v in t.items()}
    return edit


@pytest.mark.parametrize("case, names, dtype, expect", [
    ("float64-head", ["head.weight"], torch.float64,
     "'head.weight' is float64 but the model's other floating tensors are float32"),
    ("float16-encoder", ["encoder.weight", "encoder.bias"], torch.float16,
     "'encoder.bias' has dtype float16, which ssmcompile does not load"),
    ("float8", ["head.bias"], torch.float8_e4m3fn, "'head.bias' has dtype float8_e4m3fn"),
    ("float8-e5m2", ["head.bias"], torch.float8_e5m2, "'head.bias' has dtype float8_e5m2"),
    ("all-bfloat16", None, torch.bfloat16, "has dtype bfloat16, which ssmcompile does not"),
])
def test_dtype_allow_list(case, names, dtype, expect, base, tmp_path, capsys):
    bad = rewrite(base, tmp_path / f"{case}.safetensors", tensors=convert(names, dtype))
    for argv in both(bad, tmp_path):
        assert_refused(argv, expect, capsys, tmp_path)


def test_float64_model_loads_and_reduces(base, tmp_path, capsys):
    f64 = rewrite(base, tmp_path / "f64.safetensors", tensors=convert(None, torch.float64))
    model, _ = load_checkpoint(f64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    out = tmp_path / "out.safetensors"
    assert main(["-q", "reduce", str(f64), *REDUCE, "-o", str(out)]) == 0
    assert {p.dtype for p in load_checkpoint(out)[0].parameters()} == {torch.float64}


def test_save_refuses_a_model_it_could_not_load(tmp_path):
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(3,), d_output=2, d_input=2)
    model = build_model(spec)
    model.head.double()
    with pytest.raises(CheckpointError, match="'head.bias' is float64"):
        save_checkpoint(tmp_path / "m.safetensors", model, spec=spec.to_dict())
    assert not list(tmp_path.iterdir())


# ---- item 5, inspect: strings from the file --------------------------------------------------


def test_inspect_lone_surrogate(base, tmp_path, capsys):
    ckpt = rewrite(base, tmp_path / "s.safetensors", extra='{"note": "\\udc80x"}')
    code, out, err, _ = run(["-q", "inspect", str(ckpt)], capsys, tmp_path)
    assert code == 0 and err == ""
    out.encode("utf-8")  # print() to a UTF-8 terminal raised UnicodeEncodeError
    assert "note=\\udc80x" in out


def test_inspect_escapes_terminal_sequences(base, tmp_path, capsys):
    ckpt = rewrite(base, tmp_path / "e.safetensors",
                   extra={"note": "\x1b[2J\x1b]0;pwned\x07red"},
                   versions={"ssmcompile": "0.1\x1b[31m"})
    code, out, _, _ = run(["-q", "inspect", str(ckpt)], capsys, tmp_path)
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert "note=\\x1b[2J\\x1b]0;pwned\\x07red" in out


def test_inspect_truncates_long_strings(base, tmp_path, capsys):
    ckpt = rewrite(base, tmp_path / "l.safetensors", extra={"note": "A" * 500_000})
    code, out, _, _ = run(["-q", "inspect", str(ckpt)], capsys, tmp_path)
    extra = next(line for line in out.splitlines() if line.startswith("extra:"))
    assert code == 0 and len(extra) < 400 and "[499800 more characters]" in extra
    code, out, _, _ = run(["-q", "inspect", "--json", str(ckpt)], capsys, tmp_path)
    assert json.loads(out)["extra"]["note"] == "A" * 500_000  # JSON keeps the data whole


@pytest.mark.parametrize("field, value, expect", [
    ("extra", {"note": "A" * 3_000_000}, "extra['note'] is 3000000 characters long"),
    ("builder", json.dumps("B" * 1_000_000), "'builder' is 1000000 characters long"),
    ("versions", {"x" * 5000: "1"}, "'versions' key is 5000 characters long"),
])
def test_long_strings_refused_with_a_short_message(field, value, expect, base, tmp_path,
                                                    capsys):
    bad = rewrite(base, tmp_path / "x.safetensors", **{field: value})
    assert_refused(["-q", "inspect", str(bad)], expect, capsys, tmp_path)


def test_deep_nesting_in_spec(base, tmp_path, capsys):
    deep = "[" * 5000 + "]" * 5000
    bad = rewrite(base, tmp_path / "d.safetensors",
                  spec=json.dumps({**spec_of(base), "state_dims": "@"}).replace('"@"', deep))
    assert_refused(["-q", "inspect", str(bad)], "metadata 'spec' is not valid JSON", capsys,
                   tmp_path)
    nested = {**spec_of(base), "r_min": json.loads("[" * 40 + "]" * 40)}
    bad = rewrite(base, tmp_path / "d2.safetensors", spec=nested)
    assert_refused(["-q", "inspect", str(bad)], "nested deeper than 16 levels", capsys, tmp_path)
