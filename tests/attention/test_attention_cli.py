"""The CLI on a linear-attention checkpoint: `ssmcompile reduce` shrinks d_k, `inspect` reads
the result, and the file reloads at the reduced size."""

from __future__ import annotations

import torch

from ssmcompile.attention import AttentionLMConfig, LinearAttentionConfig, LinearAttentionLM
from ssmcompile.cli.main import main
from ssmcompile.io import load_checkpoint, save_checkpoint


def test_reduce_and_inspect_an_attention_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    attn = LinearAttentionConfig(16, heads=2, key_dim=16, value_dim=4, kind="gla", chunk_size=8)
    lm = LinearAttentionLM(AttentionLMConfig(40, attn, n_layers=2))
    src = save_checkpoint(tmp_path / "lm.safetensors", lm, builder="attention-lm",
                          spec=lm.current_config)
    out = tmp_path / "lm8.safetensors"
    assert main(["reduce", str(src), "--rank", "8", "-o", str(out)]) == 0
    report = capsys.readouterr().out
    assert "linear-attention  16 → 8" in report and "wrote" in report
    model, meta = load_checkpoint(out)
    assert model.key_dims == (8, 8) and meta.builder == "attention-lm"
    assert [e.r for e in meta.history] == [8, 8]
    assert main(["inspect", str(out)]) == 0
    assert "layers.1.attn: n = 8  (initially 16)" in capsys.readouterr().out
    ids = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        assert model(ids).shape == (2, 12, 40)
