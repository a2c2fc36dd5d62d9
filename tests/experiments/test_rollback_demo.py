"""tools/experiments/rollback_demo.py: the quick run writes its JSON and plot; the README
section names the rollback from the file's records (and stays out for quick files)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "experiments"


def _demo():
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module("rollback_demo")


def test_quick_run_writes_json_and_plot_but_no_readme_section(tmp_path):
    demo = _demo()
    assert demo.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "rollback.json").read_text())
    assert [a["pragmatic"] for a in data["arms"]] == [True, False]
    assert all(a["evals"] and a["events"] for a in data["arms"])
    assert (tmp_path / "rollback.png").stat().st_size > 1000
    assert demo.rollback_section(tmp_path) == []


def test_section_reports_the_rollback_and_both_outcomes(tmp_path):
    demo = _demo()
    arm = {"dims_final": [27], "test_acc": 0.969, "events": [[50, [71]], [150, [12]]],
           "rollbacks": [{"step": 200, "val_acc": 0.333, "baseline": 0.522, "event_step": 150,
                          "dims_from": [12], "dims_to": [27]}], "pragmatic": True}
    bare = {**arm, "pragmatic": False, "rollbacks": [], "dims_final": [5], "test_acc": 0.964}
    (tmp_path / "rollback.json").write_text(json.dumps(
        {"quick": False, "tau": 0.3, "tolerance": 0.02, "eval_every": 50,
         "full_test_acc": 0.975, "arms": [arm, bare]}))
    text = "\n".join(demo.rollback_section(tmp_path))
    assert "at step 200: val 33.3 % < 52.2 % before the step-150 event, back to n 27" in text
    assert "| no safety net | 50 → 71, 150 → 12 | – | 5 | 96.4 |" in text
    assert "| 256 | 97.5 |" in text
