"""ModelSpec validation and JSON round trip; build_model with per-block (reduced) state dims."""

from __future__ import annotations

import json

import pytest
import torch

from ssmcompile.adapters import adapter_for
from ssmcompile.errors import SSMCompileError
from ssmcompile.layers import LRU, S4D, S5, DenseLTI, ModelSpec, SpecError, build_model
from ssmcompile.numerics.system import LTISystem

BASE = dict(layer="lru", d_model=8, state_dims=(6, 4, 2), d_output=3, d_input=5)


def test_to_dict_from_dict_round_trip_through_json():
    spec = ModelSpec(**BASE, dropout=0.1, r_min=0.5)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["state_dims"] == [6, 4, 2] and d["spec_version"] == 1
    again = ModelSpec.from_dict(d)
    assert again == spec and isinstance(again.state_dims, tuple)
    lm = ModelSpec(
        layer="s4d", d_model=4, state_dims=(3,), d_output=7, task="lm", vocab_size=7, norm="layer"
    )
    assert ModelSpec.from_dict(json.loads(json.dumps(lm.to_dict()))) == lm


@pytest.mark.parametrize("kind,cls", [("lru", LRU), ("s5", S5), ("s4d", S4D), ("dense", DenseLTI)])
def test_build_model_per_block_dims(kind, cls):
    spec = ModelSpec(**{**BASE, "layer": kind})
    model = build_model(spec)
    assert model.state_dims == (6, 4, 2) and model.spec == spec and spec.n_blocks == 3
    assert all(type(b.ssm) is cls for b in model.blocks)
    assert model(torch.randn(2, 5, 5)).shape == (2, 3)


def test_reduced_model_spec_rebuilds_the_architecture_for_a_checkpoint():
    torch.manual_seed(0)
    model = build_model(ModelSpec(**BASE))
    block = model.blocks[1]
    adapter = adapter_for(block.ssm)
    sys = adapter.read(block.ssm)
    block.ssm = adapter.rebuild(block.ssm, LTISystem(sys.A[:3], sys.B[:3], sys.C[:, :3], sys.D))
    assert model.state_dims == (6, 3, 2) and model.spec.state_dims == (6, 3, 2)
    saved = json.dumps(model.spec.to_dict())
    clone = build_model(ModelSpec.from_dict(json.loads(saved)))
    clone.load_state_dict(model.state_dict())  # shapes match the reduced architecture
    model.eval(), clone.eval()
    u = torch.randn(2, 7, 5)
    with torch.no_grad():
        assert torch.equal(model(u), clone(u))


@pytest.mark.parametrize(
    "change",
    [
        {"layer": "mamba"},
        {"task": "regress"},
        {"norm": "group"},
        {"d_model": 0},
        {"d_model": 8.0},
        {"d_output": True},
        {"state_dims": ()},
        {"state_dims": (4, 0)},
        {"state_dims": (4, 2.5)},
        {"state_dims": (4, True)},
        {"vocab_size": 10},  # both d_input and vocab_size
        {"d_input": None},  # neither
        {"task": "lm", "norm": "batch", "d_output": 3},
        {"dropout": 1.0},
        {"dropout": float("nan")},
        {"r_min": 0.99, "r_max": 0.9},
        {"r_max": 1.0},
        {"max_phase": 0.0},
        {"dt_min": 0.0},
        {"dt_min": 0.5, "dt_max": 0.1},
    ],
)
def test_bad_specs_raise(change):
    with pytest.raises(SpecError) as info:
        ModelSpec(**{**BASE, **change})
    assert isinstance(info.value, SSMCompileError) and "\n" not in str(info.value)
    # The same values arriving through from_dict fail the same way.
    d = ModelSpec(**BASE).to_dict()
    d.update({k: list(v) if isinstance(v, tuple) else v for k, v in change.items()})
    with pytest.raises(SpecError):
        ModelSpec.from_dict(d)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(extra=1),
        lambda d: d.update(spec_version=2),
        lambda d: d.pop("d_model"),
        lambda d: d.update(state_dims="6,4"),
    ],
)
def test_from_dict_rejects_malformed_dicts(mutate):
    d = ModelSpec(**BASE).to_dict()
    mutate(d)
    with pytest.raises(SpecError):
        ModelSpec.from_dict(d)
    with pytest.raises(SpecError):
        ModelSpec.from_dict([1, 2])  # type: ignore[arg-type]


def test_with_state_dims():
    spec = ModelSpec(**BASE).with_state_dims((1, 1, 1))
    assert spec.state_dims == (1, 1, 1) and build_model(spec).state_dims == (1, 1, 1)
