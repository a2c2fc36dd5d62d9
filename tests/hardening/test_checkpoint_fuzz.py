"""Fuzzing ``inspect`` and ``reduce`` with mutants of small valid checkpoints (issue 17).

A fixed seed makes a few hundred mutants: byte flips in header and data, JSON-level type
changes, huge numbers, deep nesting, long strings, dtype swaps, odd histories, plus the issue's
crafted files. One subprocess runs both commands on every mutant in-process
(``ssmcompile.cli.main.main``) under an address-space limit, with a wall-clock alarm and the
peak resident memory reset before each run; each run must give a valid result (exit 0, clean
output) or exactly one ``ssmcompile: error:`` line (exit 1), within ``LIMIT_S`` seconds and
``LIMIT_MB`` of memory, without touching its input. Run directly (``python
tests/hardening/test_checkpoint_fuzz.py DIR``) the file is that subprocess.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 1717
RANDOM_MUTANTS = 300
LIMIT_S = 5.0  # per command; a clean error takes well under 0.5 s
LIMIT_MB = 600  # peak resident growth per command over the warmed-up process
HEADROOM_GB = 3  # address space the runner may add to what it has after its imports

# ---- the runner (the subprocess) ---------------------------------------------------------


class _Alarm(BaseException):
    """Raised by SIGALRM; a BaseException so no ``except Exception`` in the code under test
    can swallow it."""


def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _run_one(main: Callable, argv: list[str]) -> dict:
    import contextlib
    import io
    import signal
    import time
    import traceback

    out, err = io.StringIO(), io.StringIO()

    def on_alarm(signum, frame):
        raise _Alarm()

    signal.signal(signal.SIGALRM, on_alarm)
    _reset_peak()
    t0 = time.perf_counter()
    crash = None
    code = None
    signal.setitimer(signal.ITIMER_REAL, 3 * LIMIT_S)  # a hang still ends the run
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except _Alarm:
        crash = "timeout"
    except BaseException as exc:  # noqa: BLE001 - anything escaping main is the bug we look for
        crash = "".join(traceback.format_exception_only(type(exc), exc))[-500:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"argv": argv, "code": code, "crash": crash, "seconds": time.perf_counter() - t0,
            "peak_mb": _peak_kb() / 1024, "stdout": out.getvalue()[-2000:],
            "stdout_len": len(out.getvalue()), "stderr": err.getvalue()[-2000:],
            "stdout_utf8": _encodes(out.getvalue())}


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def runner(folder: Path) -> None:
    """Run inspect and reduce on every ``*.safetensors`` under ``folder/mutants``; write
    ``folder/results.json``."""
    import resource

    import torch

    from ssmcompile.cli.main import main

    torch.set_num_threads(1)
    mutants = sorted((folder / "mutants").glob("*.safetensors"))
    bases = sorted((folder / "bases").glob("*.safetensors"))
    out = folder / "out.safetensors"
    for base in bases:  # first calls compile kernels and fill caches: not the mutants' cost
        main(["-q", "inspect", str(base)])
        main(["-q", "reduce", str(base), "--rank", "1", "--probe-length", "8", "-o", str(out)])
        out.unlink(missing_ok=True)
    baseline_mb = _peak_kb() / 1024
    with open("/proc/self/status") as f:
        vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + HEADROOM_GB * (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results = []
    for path in mutants:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for argv in (["-q", "inspect", str(path)],
                     ["-q", "reduce", str(path), "--rank", "1", "--probe-length", "8", "-o",
                      str(out)]):
            r = _run_one(main, argv)
            r["mutant"] = path.name
            r["baseline_mb"] = baseline_mb
            r["input_changed"] = hashlib.sha256(path.read_bytes()).hexdigest() != digest
            results.append(r)
            out.unlink(missing_ok=True)
    (folder / "results.json").write_text(json.dumps(results))


# ---- mutants ------------------------------------------------------------------------------


def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict | str, data: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    body = text.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(body)) + body + data


RAW = "@@raw@@"  # a JSON token json.dumps cannot write (NaN, deep nesting) goes in as text
HOSTILE: list[object] = [
    "x", "", None, [], {}, True, 0, -1, 1.5, 10**8, 10**9, 2**31, 2**63, 10**30, 1e308,
    -1e308, (RAW, "NaN"), (RAW, "Infinity"), (RAW, "[" * 3000 + "]" * 3000),
    (RAW, '{"a":' * 200 + "1" + "}" * 200), "A" * (1 << 20), [1] * 100_000,
    {f"k{i}": i for i in range(5000)}, {"__import__": "os"}, "\udc80", "\x1b[2J\x1b]0;x\x07",
    [10**9] * 3, [[1, 2], [3]], 12345678901234567890,
]


def _dumps(value: object) -> str:
    raws: list[str] = []

    def sub(v):
        if isinstance(v, tuple) and len(v) == 2 and v[0] == RAW:
            raws.append(v[1])
            return f"{RAW}{len(raws) - 1}"
        if isinstance(v, list):
            return [sub(x) for x in v]
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        return v

    text = json.dumps(sub(value))
    for i, raw in enumerate(raws):
        text = text.replace(f'"{RAW}{i}"', raw)
    return text


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):
            out += _paths(v, prefix + (i,))
    return out


def _set(value: object, path: tuple, new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _set(copy[head], rest, new)
    return copy


def _retype(v: object, rng: random.Random) -> object:
    """The same content with another JSON type: numbers as strings, lists as dicts, ..."""
    if isinstance(v, bool) or v is None:
        return rng.choice([0, "true", [], None if v is not None else False])
    if isinstance(v, (int, float)):
        return rng.choice([str(v), [v], {"v": v}, float(v) if isinstance(v, int) else int(v)])
    if isinstance(v, str):
        return rng.choice([[v], {v: v}, 1, None])
    if isinstance(v, list):
        return rng.choice([{str(i): x for i, x in enumerate(v)}, v[::-1], v + v, v[:-1], None])
    return rng.choice([list(v.values()), list(v), {**v, "extra_key": 1}, {}])


def _edit_meta(raw: bytes, key: str, edit: Callable[[object], object], rng) -> bytes:
    header, data = split(raw)
    meta = dict(header["__metadata__"])
    meta[key] = _dumps(edit(json.loads(meta[key])))
    header["__metadata__"] = meta
    return join(header, data)


META_KEYS = ("spec", "initial_spec", "history", "versions", "extra", "builder",
             "format_version")


def json_value_mutant(raw: bytes, rng: random.Random) -> bytes:
    key = rng.choice(META_KEYS)
    value = json.loads(split(raw)[0]["__metadata__"][key])
    path = rng.choice(_paths(value))
    return _edit_meta(raw, key, lambda v: _set(v, path, rng.choice(HOSTILE)), rng)


def json_type_mutant(raw: bytes, rng: random.Random) -> bytes:
    key = rng.choice(META_KEYS)
    value = json.loads(split(raw)[0]["__metadata__"][key])
    path = rng.choice(_paths(value))

    def edit(v):
        node = v
        for p in path:
            node = node[p]
        return _set(v, path, _retype(node, rng))

    return _edit_meta(raw, key, edit, rng)


def flip_mutant(raw: bytes, rng: random.Random, in_header: bool) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    lo, hi = (0, 8 + n) if in_header else (8 + n, len(raw))
    buf = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(lo, hi)
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


SAME_WIDTH = [["BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2"], ["I16", "U16", "F16", "BF16"],
              ["I32", "U32", "F32"], ["I64", "U64", "F64", "C64"]]


def dtype_mutant(raw: bytes, rng: random.Random) -> bytes:
    header, data = split(raw)
    names = sorted(k for k in header if k != "__metadata__")
    for name in rng.sample(names, rng.randint(1, 3)):
        group = next(g for g in SAME_WIDTH if header[name]["dtype"] in g)
        header[name] = {**header[name], "dtype": rng.choice(group)}
    return join(header, data)


def convert_mutant(raw: bytes, rng: random.Random) -> bytes:
    """Tensors re-encoded in another dtype (values converted, not reinterpreted)."""
    import safetensors.torch
    import torch

    header, _ = split(raw)
    tensors = safetensors.torch.load(raw)
    dtype = rng.choice([torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn,
                        torch.float8_e5m2, torch.int32, torch.complex64])
    names = sorted(tensors)
    chosen = names if rng.random() < 0.3 else rng.sample(names, rng.randint(1, 3))
    for name in chosen:
        if tensors[name].is_floating_point():
            tensors[name] = tensors[name].to(dtype)
    return safetensors.torch.save(tensors, metadata=header["__metadata__"])


def shape_mutant(raw: bytes, rng: random.Random) -> bytes:
    header, data = split(raw)
    name = rng.choice(sorted(k for k in header if k != "__metadata__"))
    shape = header[name]["shape"]
    numel = 1
    for s in shape:
        numel *= s
    header[name] = {**header[name], "shape": rng.choice(
        [shape[::-1], [numel], [1, numel], shape + [1], [numel, 0], [2**40, 0], [-1], [1.5]])}
    return join(header, data)


def _event(block: str, n: int, r: int, step: int = 10) -> dict:
    return {"step": step, "block": block, "n": n, "r": r, "hsv_kept": [1.0] * r, "bound": 0.1}


def history_mutant(raw: bytes, rng: random.Random) -> bytes:
    history = json.loads(split(raw)[0]["__metadata__"]["history"])
    blocks = sorted({e["block"] for e in history}) or ["blocks.0.ssm"]
    b = rng.choice(blocks)
    options = [
        [_event(b, 8, 7, s) for s in range(5000)],  # long, all wrong after the first
        [_event(b, 8, -1)], [_event(b, 8, 0)], [_event(b, -8, 2)], [_event("blocks.99.ssm", 8, 6)],
        [_event("", 8, 6)], [_event(b, 8, 6, step=-3)], [_event(b, 8, 6, step=2**63)],
        history + [_event(b, 6, 5, step=1)],  # steps go backwards
        history + history, [],
        [{**_event(b, 8, 6), "hsv_kept": [0.5] * 200_000}],
        [{**_event(b, 8, 6), "bound": (RAW, "NaN")}],
        [{**_event(b, 8, 6), "block": "x" * 100_000}],
        [_event(f"blocks.{i}.ssm", 2, 1) for i in range(3000)],
    ]
    return _edit_meta(raw, "history", lambda v: rng.choice(options), rng)


def file_mutant(raw: bytes, rng: random.Random) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    return rng.choice([
        raw[: rng.randrange(len(raw))],
        raw + bytes(rng.randrange(1, 64)),
        struct.pack("<Q", rng.choice([0, n - 1, n + 1, 2**63, len(raw)])) + raw[8:],
        join('{"__metadata__": {"spec": 5}}', b""),
        join("[" * 100_000 + "]" * 100_000, b""),
    ])


def metadata_key_mutant(raw: bytes, rng: random.Random) -> bytes:
    header, data = split(raw)
    meta = dict(header["__metadata__"])
    choice = rng.randrange(3)
    if choice == 0:
        meta.pop(rng.choice(sorted(meta)))
    elif choice == 1:
        meta[rng.choice(["__import__", "x" * 1000, "\x1b[31m"])] = "os"
    else:
        meta["builder"] = json.dumps(rng.choice(["selective-lm", "attention-lm", "user-model",
                                                 "os.system", "ssm-model"]))
    header["__metadata__"] = meta
    return join(header, data)


MUTATORS = [
    lambda raw, rng: flip_mutant(raw, rng, in_header=True),
    lambda raw, rng: flip_mutant(raw, rng, in_header=False),
    json_value_mutant, json_value_mutant, json_value_mutant, json_type_mutant,
    json_type_mutant, dtype_mutant, convert_mutant, shape_mutant, history_mutant,
    history_mutant, file_mutant, metadata_key_mutant,
]


def crafted(raw: bytes) -> dict[str, bytes]:
    """The issue's own files, as mutants of ``raw`` (an LRU checkpoint)."""
    header, data = split(raw)
    meta = header["__metadata__"]
    spec = json.loads(meta["spec"])
    lm = {"vocab_size": 8, "d_model": 4, "n_layers": 10**7, "structure": "mamba2",
          "d_state": 4, "expand": 2, "d_conv": 4, "head_dim": 4, "n_groups": 1,
          "layer_d_states": []}

    def with_meta(**changes) -> bytes:
        return join({**header, "__metadata__": {**meta, **{
            k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()}}}, data)

    files = {}
    for name, s in [("dims-1e9", {**spec, "state_dims": [10**9]}),
                    ("dims-1e8", {**spec, "state_dims": [10**8, 5]}),
                    ("blocks-1e5", {**spec, "state_dims": [1] * 100_000}),
                    ("d-model-2-63", {**spec, "d_model": 2**63}),
                    ("d-model-2-40", {**spec, "d_model": 2**40})]:
        files[name] = with_meta(spec=s, initial_spec=s, history=[])
    files["lm-layers-1e7"] = with_meta(builder="selective-lm", spec=lm, initial_spec=lm,
                                       history=[])
    many = 6000
    files["history-6000x6000"] = with_meta(
        spec={**spec, "state_dims": [1] * many}, initial_spec={**spec, "state_dims": [2] * many},
        history=[_event(f"blocks.{i}.ssm", 2, 1) for i in range(many)])
    files["surrogate"] = with_meta(extra='{"note": "\\udc80"}')
    files["escapes"] = with_meta(extra={"note": "\x1b[2J\x1b]0;owned\x07"})
    files["long-string"] = with_meta(extra={"note": "A" * 3_000_000})
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    name = "head.weight"
    files["float8"] = _converted(raw, {name: "float8_e4m3fn"})
    files["mixed-float64"] = _converted(raw, {name: "float64"})
    files["mixed-float16"] = _converted(raw, {k: "float16" for k in tensors
                                              if k.startswith("encoder.")})
    return files


def _converted(raw: bytes, dtypes: dict[str, str]) -> bytes:
    import safetensors.torch
    import torch

    header, _ = split(raw)
    tensors = safetensors.torch.load(raw)
    for name, dtype in dtypes.items():
        tensors[name] = tensors[name].to(getattr(torch, dtype))
    return safetensors.torch.save(tensors, metadata=header["__metadata__"])


def make_bases(folder: Path) -> list[Path]:
    """An LRU model with a reduction in its history and a one-layer Mamba-1 LM."""
    import torch

    from ssmcompile.io import save_checkpoint
    from ssmcompile.layers import ModelSpec, build_model
    from ssmcompile.selective.lm import LMConfig, SelectiveLM

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(6, 5), d_output=3, d_input=2)
    event = {"step": 3, "block": "blocks.0.ssm", "n": 8, "r": 6,
             "hsv_kept": [1.0, 0.8, 0.5, 0.3, 0.2, 0.1], "bound": 0.05}
    lru = save_checkpoint(folder / "lru.safetensors", build_model(spec).eval(),
                          spec=spec.to_dict(),
                          initial_spec=spec.with_state_dims((8, 5)).to_dict(), history=[event],
                          extra={"step": "7"})
    config = LMConfig(vocab_size=6, d_model=4, n_layers=1, structure="mamba1", d_state=3)
    lm = SelectiveLM(config).eval()
    sel = save_checkpoint(folder / "lm.safetensors", lm, builder="selective-lm",
                          spec=lm.spec.to_dict())
    return [lru, sel]


def make_mutants(bases: list[Path], folder: Path) -> int:
    rng = random.Random(SEED)
    raws = [b.read_bytes() for b in bases]
    folder.mkdir(parents=True)
    for name, data in crafted(raws[0]).items():
        (folder / f"crafted-{name}.safetensors").write_bytes(data)
    for i in range(RANDOM_MUTANTS):
        k = 0 if i % 4 else 1  # three in four from the LRU file, with its history
        mutate = MUTATORS[i % len(MUTATORS)]
        (folder / f"m{i:03d}-{k}.safetensors").write_bytes(mutate(raws[k], rng))
    return len(list(folder.iterdir()))


# ---- the test -----------------------------------------------------------------------------


def _problems(r: dict) -> list[str]:
    found = []
    if r["crash"]:
        found.append(f"escaped main: {r['crash'].strip()[:300]}")
    if r["input_changed"]:
        found.append("the input file changed")
    if r["seconds"] > LIMIT_S:
        found.append(f"took {r['seconds']:.1f} s")
    if r["peak_mb"] - r["baseline_mb"] > LIMIT_MB:
        found.append(f"peak memory {r['peak_mb'] - r['baseline_mb']:.0f} MB over the baseline")
    err_lines = [x for x in r["stderr"].splitlines() if x.startswith("ssmcompile: error:")]
    if "Traceback" in r["stderr"]:
        found.append("traceback on stderr")
    if r["code"] == 1:
        if len(err_lines) != 1 or r["stdout_len"]:
            found.append(f"exit 1 without exactly one error line: {r['stderr'][-300:]!r}")
        elif len(err_lines[0]) > 1000 or not err_lines[0].isprintable():
            found.append(f"error line not short and printable: {err_lines[0][:200]!r}")
    elif r["code"] == 0:
        text = r["stdout"]
        if err_lines or not r["stdout_utf8"] or any(
                not (c.isprintable() or c == "\n") for c in text):
            found.append("exit 0 with unprintable output or an error line")
    elif not r["crash"]:
        found.append(f"exit code {r['code']}")
    return found


def test_fuzz_inspect_and_reduce(tmp_path):
    bases = make_bases(tmp_path / "bases")
    count = make_mutants(bases, tmp_path / "mutants")
    assert count >= RANDOM_MUTANTS
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 2 * count
    bad = [f"{r['mutant']} {r['argv'][1]}: {'; '.join(p)}"
           for r in results if (p := _problems(r))]
    assert not bad, f"{len(bad)} of {len(results)} runs failed:\n" + "\n".join(bad[:40])
    # the fuzz must reach past the header checks: some mutants load, some reduce
    ok = {(r["mutant"], r["argv"][1]) for r in results if r["code"] == 0}
    assert sum(1 for _, cmd in ok if cmd == "inspect") >= 10
    assert sum(1 for _, cmd in ok if cmd == "reduce") >= 5


if __name__ == "__main__":
    runner(Path(sys.argv[1]))
