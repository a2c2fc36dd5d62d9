"""A reduced LinearAttentionLM saved with the checkpoint writer reloads at the reduced d_k,
both by the allow-listed ``"attention-lm"`` builder and by replay onto the user's factory;
a spec from a file is validated and its sizes bounded."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import ssmcompile
from ssmcompile.attention import (
    ATTENTION_LM_BUILDER,
    AttentionLMConfig,
    LinearAttentionConfig,
    LinearAttentionLM,
    reduce_key_dim,
)
from ssmcompile.errors import CheckpointError
from ssmcompile.io import ReductionEvent, load_checkpoint, registered_builders, save_checkpoint
from ssmcompile.io.builders import call_builder

VOCAB = 40
ATTN = LinearAttentionConfig(16, heads=2, key_dim=16, value_dim=4, kind="gla", chunk_size=8)
CONFIG = AttentionLMConfig(VOCAB, ATTN, n_layers=2)


def _factory() -> LinearAttentionLM:
    torch.manual_seed(0)
    return LinearAttentionLM(CONFIG)


def _saved(tmp_path):
    """The LM reduced to d_k 8 (layer 0) and 4 (layer 1), saved; and the reduced model."""
    lm = _factory()
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(2))
    mid, _, _ = ssmcompile.run_pipeline(lm, ids, "hankel-analysis,balanced-truncation{rank=8}")
    # A second, later event on layer 1 alone (calibrated on any input: shapes are the point).
    reduced = mid
    u = torch.randn(3, 24, 16, generator=torch.Generator().manual_seed(4))
    reduced.layers[1].attn = reduce_key_dim(mid.layers[1].attn, u, rank=4)[0]
    assert reduced.key_dims == (8, 4)
    history = [ReductionEvent(1, f"layers.{i}.attn", 16, 8, (), 0.0) for i in range(2)] + [
        ReductionEvent(2, "layers.1.attn", 8, 4, (), 0.0)]
    path = save_checkpoint(tmp_path / "lm.safetensors", reduced, builder="attention-lm",
                           spec=reduced.current_config, initial_spec=lm.current_config,
                           history=history)
    return path, reduced.eval()


def test_reduced_lm_reloads_at_the_reduced_key_dims(tmp_path):
    path, reduced = _saved(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = reduced(ids)
    for loaded, meta in (load_checkpoint(path), load_checkpoint(path, model=_factory)):
        assert isinstance(loaded, LinearAttentionLM) and meta.builder == "attention-lm"
        assert loaded.key_dims == (8, 4) and meta.spec["layer_key_dims"] == [8, 4]
        # The reduced layers keep the full model's query scale (16 ** -0.5, not 8 ** -0.5).
        assert loaded.layers[1].attn.config.scale == 0.25
        with torch.no_grad():
            assert torch.equal(loaded(ids), want)
            state = loaded.initial_state(2)
            assert [s[1].shape for s in state] == [(2, 2, 8, 4), (2, 2, 4, 4)]
            torch.testing.assert_close(loaded.step(ids[:, 0], state)[0], want[:, 0],
                                       rtol=1e-5, atol=1e-5)


def test_builder_is_allow_listed_and_round_trips_its_spec():
    assert "attention-lm" in registered_builders()
    spec = CONFIG.to_dict()
    assert json.loads(json.dumps(spec)) == spec
    canonical = ATTENTION_LM_BUILDER.canonical(spec)
    assert canonical["layer_key_dims"] == [16, 16]
    assert AttentionLMConfig.from_dict(canonical) == CONFIG.canonical()
    assert ATTENTION_LM_BUILDER.state_dims(spec) == {"layers.0.attn": 16, "layers.1.attn": 16}
    resized = ATTENTION_LM_BUILDER.resize(canonical, "layers.1.attn", 4)
    assert ATTENTION_LM_BUILDER.state_dims(resized) == {"layers.0.attn": 16, "layers.1.attn": 4}


def _with(path: tuple[str, ...], value):
    spec = CONFIG.to_dict()
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return spec


@pytest.mark.parametrize(("path", "value", "match"), [
    (("depth",), 3, "unknown keys"),
    (("attention", "key_dim"), True, "key_dim must be an int"),
    (("attention", "qk_norm"), "yes", "qk_norm has a bad value"),
    (("attention", "scale"), float("nan"), "scale has a bad value"),
    (("attention", "kind"), "softmax", "kind must be one of"),
    (("layer_key_dims",), [8], "1 entries for 2 layers"),
    (("attention", "d_model"), (1 << 20) + 1, "d_model = 1048577 exceeds"),
    (("n_layers",), 5000, "n_layers = 5000 exceeds"),
    # every size within bounds, the whole beyond: caught on a meta build, nothing allocated
    (("vocab_size",), 1 << 20, "parameters exceed"),
])
def test_bad_or_oversized_specs_are_one_line_errors(path, value, match):
    spec = _with(path, value)
    if path == ("vocab_size",):
        spec["attention"]["d_model"] = 1 << 12
    with pytest.raises(CheckpointError, match=match) as err:
        call_builder("cannot build model", ATTENTION_LM_BUILDER.build, spec)
    assert "\n" not in str(err.value)


def test_with_state_dims_keeps_the_scale_of_the_full_model():
    reduced = CONFIG.with_state_dims((8, 4))
    assert reduced.layer_config(1) == replace(ATTN, key_dim=4)
    assert reduced.layer_config(1).scale == ATTN.scale == 0.25
