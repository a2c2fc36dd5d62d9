"""The real entry points as subprocesses (run concurrently to save wall time): every
subcommand through the console script or ``python -m`` (analyze and reduce succeed, inspect
fails on a NaN checkpoint), exit codes and clean stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch

from ssmcompile.io import load_tensors, read_checkpoint_meta, save_checkpoint
from ssmcompile.layers import ModelSpec, build_model


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("ssmcompile")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ssmcompile.cli.main"]


def test_entry_points_as_subprocesses(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(layer="dense", d_model=4, state_dims=(6, 5), d_output=3, d_input=2)
    ckpt = save_checkpoint(tmp_path / "model.safetensors", build_model(spec),
                           spec=spec.to_dict(), extra={"step": "9"})
    bad = tmp_path / "bad.safetensors"
    tensors, meta = load_tensors(ckpt)
    tensors["head.bias"][1] = float("nan")
    bad.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    out = tmp_path / "small.safetensors"
    module = [sys.executable, "-m"]
    commands = {
        "analyze": module + ["ssmcompile.cli.main", "analyze", str(ckpt), "--json",
                             "--probe-length", "16"],
        "reduce": console_script() + ["reduce", str(ckpt), "--rank", "3", "-o", str(out),
                                      "--probe-length", "16"],
        # the failure path of a real process (exit status, stderr); inspect's success output
        # is covered in-process, and each child here costs seconds of torch import
        "inspect": module + ["ssmcompile.cli.inspect", str(bad)],
    }
    # one intra-op thread each: three children share two busy cores, and these tensors are tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {k: subprocess.Popen(c, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env) for k, c in commands.items()}
    results = {}
    for k, p in procs.items():  # communicate drains the pipes, so a chatty child cannot block
        stdout, stderr = p.communicate(timeout=300)
        results[k] = (p.returncode, stdout, stderr)
    for name, (_, _, err) in results.items():
        assert "Traceback" not in err, (name, err)

    code, stdout, _ = results["analyze"]
    assert code == 0
    blocks = json.loads(stdout)["blocks"]
    assert [(b["name"], b["kind"], b["state_dim"], len(b["hsv"])) for b in blocks] == [
        ("blocks.0.ssm", "dense", 6, 6), ("blocks.1.ssm", "dense", 5, 5)]

    code, stdout, _ = results["reduce"]
    assert code == 0 and f"wrote {out}" in stdout
    meta = read_checkpoint_meta(out)
    assert meta.spec["state_dims"] == [3, 3]
    assert [(e.step, e.n, e.r) for e in meta.history] == [(9, 6, 3), (9, 5, 3)]

    code, stdout, err = results["inspect"]
    assert code == 1 and stdout == ""
    assert err.strip() == f"ssmcompile: error: {bad}: tensor 'head.bias' contains NaN or Inf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.safetensors", "model.safetensors", "small.safetensors"]
