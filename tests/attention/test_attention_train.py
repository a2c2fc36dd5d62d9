"""A LinearAttentionLM trains as a user's model through the trainer with one reduction event
(rank policy: d_k 16 → 8 in both layers, calibrated on the run's probe), keeps learning through
it, and its final checkpoint reloads onto a fresh factory at the reduced key dim with identical
logits (the history replayed through the attention adapter)."""

from __future__ import annotations

import torch

from ssmcompile.attention import AttentionLMConfig, LinearAttentionConfig, LinearAttentionLM
from ssmcompile.io import load_checkpoint
from ssmcompile.train.config import load_config
from ssmcompile.train.records import TrainRecord, of_kind
from ssmcompile.train.trainer import Trainer
from ssmcompile.train.user_data import user_task_data

LAYERS = ("layers.0.attn", "layers.1.attn")
CONFIG = """
steps = 8
seed = 3
eval_every = 4
log_every = 2
checkpoint_every = 4
probe_size = 8
progress = false
pipeline = "hankel-analysis,balanced-truncation{rank=8},verify"
[data]
batch_size = 16
[schedule]
steps = [3]
"""


def make_lm() -> LinearAttentionLM:
    torch.manual_seed(0)
    attn = LinearAttentionConfig(16, heads=2, key_dim=16, value_dim=4, kind="gla",
                                 chunk_size=8)
    return LinearAttentionLM(AttentionLMConfig(32, attn, n_layers=2))


def lm_data():
    """Rotations of a cyclic token sequence: next-token prediction a tiny model learns."""
    g = torch.Generator().manual_seed(0)
    base = torch.arange(32).repeat(2)[:25]
    seqs = torch.stack([torch.roll(base, int(s)) for s in torch.randint(0, 32, (80,), generator=g)])
    x, y = seqs[:, :-1], seqs[:, 1:]
    return user_task_data((x[:64], y[:64]), (x[64:], y[64:]), task="lm")


def test_attention_lm_trains_through_a_reduction_event_and_reloads(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    config = load_config(tmp_path / "run.toml").replace(out_dir=str(tmp_path / "run"))
    data = lm_data()
    result = Trainer(config, model=make_lm, data=data, task="lm").fit()

    assert [(e.step, e.block, e.n, e.r) for e in result.history] == [
        (3, name, 16, 8) for name in LAYERS]
    assert result.dims_initial == (16, 16) and result.dims_final == (8, 8)
    assert isinstance(result.model, LinearAttentionLM) and result.model.key_dims == (8, 8)
    losses = [r.loss for r in of_kind(result.metrics, TrainRecord)]
    assert losses[-1] < losses[0], losses  # it learns, through the event

    loaded, meta = load_checkpoint(tmp_path / "run" / "last.safetensors", model=make_lm)
    assert meta.spec == {"blocks": dict.fromkeys(LAYERS, 8)}
    assert loaded.key_dims == (8, 8)
    assert loaded.initial_state(1)[0][1].shape == (1, 2, 8, 4)  # the reduced S per head
    x = data.val.x[:4]
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
