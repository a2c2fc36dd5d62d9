"""SelectiveLM checkpoints: the "selective-lm" builder, per-layer d_state, and the CLI on them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ssmcompile.cli.main import main
from ssmcompile.errors import CheckpointError
from ssmcompile.io import (
    ReductionEvent,
    get_builder,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from ssmcompile.io.builders import replay
from ssmcompile.layers import SpecError
from ssmcompile.selective import LMConfig, SelectiveLM

VOCAB = 40


def small_lm(structure: str, dims: tuple[int, ...] = ()) -> SelectiveLM:
    torch.manual_seed(0)
    return SelectiveLM(LMConfig(VOCAB, 16, 2, structure, 8, head_dim=8,
                                layer_d_states=dims)).eval()


def save(path, model: SelectiveLM):
    return save_checkpoint(path, model, builder="selective-lm", spec=model.spec)


@pytest.mark.parametrize("structure", ["mamba1", "mamba2"])
def test_round_trip_gives_identical_logits_with_per_layer_state_dims(tmp_path, structure):
    model = small_lm(structure, dims=(8, 5))
    assert model.state_dims == (8, 5)
    assert [layer.mixer.config.d_state for layer in model.layers] == [8, 5]
    loaded, meta = load_checkpoint(save(tmp_path / "lm.safetensors", model))
    assert type(loaded) is SelectiveLM and loaded.state_dims == (8, 5)
    assert meta.builder == "selective-lm" and meta.spec["layer_d_states"] == [8, 5]
    assert meta.spec["structure"] == structure
    x = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x), model(x))


def test_config_dict_round_trip_canonical_form_and_errors():
    cfg = LMConfig(VOCAB, 16, 3, "mamba1", 8)
    assert LMConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.canonical().to_dict()["layer_d_states"] == [8, 8, 8]
    builder = get_builder("selective-lm")
    assert builder.canonical(cfg.to_dict()) == builder.canonical(cfg.canonical().to_dict())
    assert builder.state_dims(builder.resize(cfg.to_dict(), "layers.2.mixer", 3)) == {
        "layers.0.mixer": 8, "layers.1.mixer": 8, "layers.2.mixer": 3}
    with pytest.raises(SpecError, match="unknown LMConfig keys: depth"):
        LMConfig.from_dict({**cfg.to_dict(), "depth": 2})
    with pytest.raises(SpecError, match="2 entries for 3 layers"):
        LMConfig(VOCAB, 16, 3, layer_d_states=(4, 4))
    with pytest.raises(SpecError, match="heads of 5"):
        LMConfig(VOCAB, 16, 1, "mamba2", head_dim=5)
    with pytest.raises(CheckpointError, match="no block 'layers.3.mixer'"):
        builder.resize(cfg.to_dict(), "layers.3.mixer", 2)


def test_tampered_spec_or_unknown_builder_is_refused(tmp_path):
    model = small_lm("mamba2")
    path = save(tmp_path / "lm.safetensors", model)
    meta = read_checkpoint_meta(path)
    with pytest.raises(CheckpointError, match="does not replay"):
        save_checkpoint(tmp_path / "bad.safetensors", model, builder="selective-lm",
                        spec=model.spec.with_state_dims((8, 6)), initial_spec=meta.initial_spec)
    with pytest.raises(CheckpointError, match="no such block"):
        replay(get_builder("selective-lm"), meta.spec,
               [ReductionEvent(step=0, block="blocks.0.ssm", n=8, r=4, hsv_kept=(), bound=0.0)])
    # a module path is not a builder name: nothing is imported from what a file says
    with pytest.raises(CheckpointError, match="unknown model builder 'ssmcompile.selective'"):
        get_builder("ssmcompile.selective")


def test_loader_finds_the_builder_without_the_selective_package_imported(tmp_path):
    path = save(tmp_path / "lm.safetensors", small_lm("mamba1"))
    code = ("import sys\nfrom ssmcompile.io import load_checkpoint\n"
            "assert 'ssmcompile.selective' not in sys.modules\n"
            f"model, meta = load_checkpoint({str(path)!r})\n"
            "print(type(model).__name__, meta.builder)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SelectiveLM", "selective-lm"]


@pytest.mark.parametrize("structure", ["mamba1", "mamba2"])
def test_cli_analyze_and_reduce_a_selective_checkpoint(tmp_path, capsys, structure):
    model = small_lm(structure)
    src = save(tmp_path / "lm.safetensors", model)
    assert main(["analyze", str(src), "--json", "--probe-length", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["builder"] == "selective-lm"
    assert [(b["name"], b["kind"], b["state_dim"]) for b in report["blocks"]] == [
        ("layers.0.mixer", structure, 8), ("layers.1.mixer", structure, 8)]
    assert all(b["sigma_max"] >= b["sigma_min"] >= 0 for b in report["blocks"])

    out = tmp_path / "small.safetensors"
    assert main(["reduce", str(src), "--rank", "6", "-o", str(out), "--probe-length", "16",
                 "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(out)
    reduced, meta = load_checkpoint(out)
    assert reduced.state_dims == (6, 6)
    assert [(e.block, e.n, e.r) for e in meta.history] == [
        ("layers.0.mixer", 8, 6), ("layers.1.mixer", 8, 6)]
    builder = get_builder("selective-lm")
    assert replay(builder, meta.initial_spec, meta.history) == meta.spec
    assert meta.initial_spec["layer_d_states"] == [8, 8]
    x = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(0))
    before, after = model(x), reduced(x)
    assert not torch.equal(before, after)  # really a different (smaller) model ...
    assert (before - after).abs().max() < 1e-2 * before.abs().max()  # ... that stays close

    assert main(["inspect", str(out)]) == 0
    assert "layers.0.mixer: n = 6  (initially 8)" in capsys.readouterr().out
