"""A selective (Mamba) character LM trains through ``ssmcompile train``, shrinks its d_state at
the scheduled events, writes "selective-lm" checkpoints and resumes bit-exactly."""

from __future__ import annotations

import random

import pytest
import torch

from ssmcompile.cli.main import main
from ssmcompile.io import load_checkpoint
from ssmcompile.selective import SelectiveLM
from ssmcompile.train import DataConfig, ModelConfig, TrainConfig
from ssmcompile.train.config import ConfigError


def write_run(tmp_path, layer: str) -> tuple:
    rng = random.Random(0)
    words = ["state", "space", "model", "hankel", "balanced", "truncation", "of", "a"]
    text = tmp_path / "text.txt"
    text.write_text(" ".join(rng.choice(words) for _ in range(2000)))
    toml = tmp_path / "run.toml"
    toml.write_text(f'''
steps = 12
eval_every = 5
log_every = 5
checkpoint_every = 5
probe_size = 8
compile = "off"
pipeline = "hankel-analysis,balanced-truncation{{fraction=0.75}},verify"
[model]
layer = "{layer}"
d_model = 16
state_dim = 12
n_blocks = 2
[data]
dataset = "text"
path = "{text}"
seq_len = 32
batch_size = 16
val_fraction = 0.05
test_fraction = 0.05
[schedule]
steps = [4, 8]
''')
    return toml, tmp_path / "run"


@pytest.mark.parametrize("layer", ["mamba2", "mamba1"])
def test_selective_lm_trains_reduces_and_resumes_through_the_cli(tmp_path, layer):
    toml, run = write_run(tmp_path, layer)
    assert main(["train", str(toml), "--out", str(run), "-q"]) == 0
    full, meta = load_checkpoint(run / "last.safetensors")
    assert type(full) is SelectiveLM and meta.builder == "selective-lm"
    assert full.state_dims == (7, 7)  # 12 → 9 → 7 per layer
    assert [(e.step, e.block, e.n, e.r) for e in meta.history] == [
        (4, "layers.0.mixer", 12, 9), (4, "layers.1.mixer", 12, 9),
        (8, "layers.0.mixer", 9, 7), (8, "layers.1.mixer", 9, 7)]
    assert meta.initial_spec["layer_d_states"] == [12, 12]
    assert meta.initial_spec["structure"] == layer
    assert sorted(p.name for p in run.glob("step-*.state.safetensors")) == [
        "step-00000010.state.safetensors", "step-00000012.state.safetensors"]
    final = {k: v.clone() for k, v in full.state_dict().items()}

    for p in [*run.glob("last*"), *run.glob("step-00000012*")]:
        p.unlink()  # resume from the step-10 files (after both events): two more steps
    assert main(["train", str(toml), "--out", str(run), "--resume", "-q"]) == 0
    again, meta_again = load_checkpoint(run / "last.safetensors")
    assert meta_again.history == meta.history and again.state_dims == (7, 7)
    resumed = again.state_dict()
    assert resumed.keys() == final.keys()
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_selective_layer_needs_a_text_dataset():
    with pytest.raises(ConfigError, match="needs data.dataset='text'"):
        TrainConfig(model=ModelConfig(layer="mamba2"), data=DataConfig(dataset="digits"))
