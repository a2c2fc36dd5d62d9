"""CI runs the pipeline-in-your-own-loop example end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_example_reduces_and_keeps_training():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pipeline_in_own_loop.py"), "--steps", "40"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "balanced-truncation{tau=0.05}" in out
    final = re.search(r"final dims \((\d+), (\d+)\)", out)
    assert final is not None and all(int(n) < 64 for n in final.groups())


def test_bring_your_own_layer_example_reduces_in_the_layers_own_class():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bring_your_own_layer.py")],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "loop-ssm  16 → 6" in out
    assert "state dims: 16 -> 6 (LoopSSM)" in out
    bound, measured = re.search(r"16 → 6\s+\S+\s+(\S+)\s+(\S+)", out).groups()
    assert float(measured) <= float(bound)
