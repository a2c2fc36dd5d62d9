"""Campaign M (per-seed Mamba files, resume, the README section's targets) and the 28×28
digits IDX files the L = 784 campaign trains on."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "experiments"


def _module(name: str):
    for p in (TOOLS, TOOLS.parent):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    return importlib.import_module(name)


def test_campaign_m_quick_writes_each_seed_once_and_resumes(tmp_path, capsys):
    m = _module("campaign_m")
    assert m.main(["--quick", "--seeds", "2", "--results", str(tmp_path)]) == 0
    files = sorted((tmp_path / "runs" / "m-quick").glob("seed*.json"))
    assert [f.name for f in files] == ["seed0.json", "seed1.json"]
    first = [f.read_bytes() for f in files]
    capsys.readouterr()
    assert m.main(["--quick", "--seeds", "2", "--results", str(tmp_path)]) == 0
    assert "seed 0: done" in capsys.readouterr().out
    assert [f.read_bytes() for f in files] == first  # not rerun, not rewritten
    data = json.loads(first[0])
    assert {r["arm"] for r in data["report"]["results"]} == {"full", "scratch", "reduced"}


def _seed_file(root: Path, seed: int, full: float, reduced: float, scratch: float,
               speedup: float, recipe: str = "r") -> None:
    results = [{"arm": "full", "val_ppl": full},
               {"arm": "reduced", "val_ppl": reduced, "energy_kept": [0.9]},
               {"arm": "scratch", "val_ppl": scratch}]
    report = {"threads": 1, "results": results, "speedup_interleaved": speedup,
              "interleaved_step_ms": {"full": 40.0, "reduced": 40.0 / speedup}}
    path = root / "runs" / "m" / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed": seed, "recipe_hash": recipe,
                                "recipe": ["--steps", "2000"], "report": report}))


def test_mamba_section_judges_targets_per_seed(tmp_path):
    report = _module("mamba_report")
    # reduced/full 1.000, 1.005, 1.02, 1.0, 1.0: mean 1.005; beats scratch in seeds 0, 3, 4
    values = [(10.0, 10.0, 10.5), (10.0, 10.05, 10.0), (10.0, 10.2, 10.1), (10.0, 10.0, 10.1),
              (10.0, 10.0, 10.3)]
    for seed, (f, r, s) in enumerate(values[:4]):
        _seed_file(tmp_path, seed, f, r, s, speedup=2.0 + seed)
    text = "\n".join(report.mamba_section(tmp_path))
    assert "not enough seeds yet" in text and "met**" not in text
    _seed_file(tmp_path, 4, *values[4], speedup=12.0)
    _seed_file(tmp_path, 7, 1.0, 99.0, 1.0, speedup=1.0, recipe="old")  # another recipe: out
    text = "\n".join(report.mamba_section(tmp_path))
    assert "5 seed(s)" in text and "| 7 |" not in text
    assert "faster steps: **met** — 5.20 ± " in text  # mean of 2, 3, 4, 5, 12
    assert "of full: **met** — reduced / full 1.0050" in text and "within in 4 of 5" in text
    assert "most seeds: **met** — 3 of 5" in text


def test_digits28_idx_files_load_as_length_784_digits(tmp_path):
    digits28 = _module("digits28")
    from sklearn.datasets import load_digits

    from ssmcompile.train.data import load_mnist_task

    task = load_mnist_task(digits28.write_digits_idx(tmp_path / "d28"))
    assert task.train.x.shape[1:] == (784, 1) and task.test.x.shape[1:] == (784, 1)
    n = len(task.train.x) + len(task.val.x) + len(task.test.x)
    assert n == 1797 and len(task.test.x) == 359
    # the test labels are the digits at the seeded permutation's first 20 %
    perm = np.random.default_rng(0).permutation(1797)
    assert task.test.y.tolist() == load_digits().target[perm[:359]].tolist()
    # an upsampled image keeps the 8×8 one's coarse layout: block means correlate strongly
    images, _ = digits28.digits_images()
    small = load_digits().images[perm[0]]
    big = images[perm[0]].astype(float)
    coarse = big[:28, :28].reshape(4, 7, 4, 7).mean(axis=(1, 3))
    ref = small.reshape(4, 2, 4, 2).mean(axis=(1, 3))
    assert np.corrcoef(coarse.ravel(), ref.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("name", ["a", "a784"])
def test_campaign_recipes_differ_only_in_shape(name):
    campaign = _module("campaign_a")
    r = campaign.RECIPE if name == "a" else campaign.RECIPE_784
    spec = r.arm("full", 0, (r.n0,))
    assert (spec.dataset, spec.upsample) == (("digits", True) if name == "a" else
                                             ("mnist", False))
    assert campaign.recipe_hash(campaign.RECIPE) == "31044d1fa9b25b76"  # the committed runs'
