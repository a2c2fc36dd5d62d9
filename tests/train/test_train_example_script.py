"""examples/own_training_loop.py and examples/own_model_training.py run as scripts (what CI
and the README rely on)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_own_training_loop_example_runs_and_reduces():
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "own_training_loop.py")],
                          capture_output=True, text=True, timeout=180, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = re.findall(r"blocks\.0\.ssm (\d+)→(\d+)", proc.stdout)
    assert len(events) == 4, proc.stdout
    assert all(int(r) < int(n) for n, r in events)
    assert [int(n) for n, _ in events][1:] == [int(r) for _, r in events][:-1]  # compounding
    final = re.search(r"final state dims \((\d+),\); test accuracy ([\d.]+)", proc.stdout)
    assert final and int(final.group(1)) < 64 and float(final.group(2)) > 0.5, proc.stdout


@pytest.mark.slow
def test_own_model_example_is_killed_resumes_and_reloads_reduced(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "own_model_training.py"),
                           "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=180, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "killed at step 9: exit -9" in proc.stdout
    dims = re.search(r"state dims \((\d+), (\d+)\) → \((\d+), (\d+)\)", proc.stdout)
    assert dims and all(int(dims.group(k + 2)) < int(dims.group(k)) for k in (1, 2)), proc.stdout
    assert re.search(r"fresh TinyClassifier: state dims \((\d+), \d+\), 4 reduction events, "
                     r"identical outputs: True", proc.stdout), proc.stdout
