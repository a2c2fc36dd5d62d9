"""Mamba blocks: step mode equals sequence mode; the LM and its offline corpus."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.selective import (
    Corpus,
    LMConfig,
    Mamba1Block,
    Mamba1Config,
    Mamba2Block,
    Mamba2Config,
    SelectiveLM,
    selective_scan_reference,
    stdlib_docstrings,
)

BLOCKS = [
    lambda: Mamba1Block(Mamba1Config(8, d_state=6)),
    lambda: Mamba1Block(Mamba1Config(8, d_state=5, d_conv=1, dt_rank=3, bias=True)),
    lambda: Mamba2Block(Mamba2Config(8, d_state=6, head_dim=4)),
    lambda: Mamba2Block(Mamba2Config(8, d_state=5, head_dim=2, n_groups=4, conv_bias=False)),
]


@pytest.mark.parametrize("make", BLOCKS)
def test_step_equals_sequence(make):
    torch.manual_seed(0)
    block = make().double()
    u = torch.randn(3, 21, 8, dtype=torch.float64)
    y = block(u)
    state = block.initial_state(3)
    steps = []
    for k in range(u.shape[1]):
        y_k, state = block.step(u[:, k], state)
        steps.append(y_k)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-12, atol=1e-12)
    assert state[1].shape == (3, block.config.d_inner, block.state_dim)
    assert y.abs().mean() > 1e-3  # the comparison is not between two zeros


@pytest.mark.parametrize("make", BLOCKS)
def test_forward_matches_reference_scan(make):
    """The block's op call equals the same block computed with the sequential twin."""
    torch.manual_seed(1)
    block = make().double()
    u = torch.randn(2, 13, 8, dtype=torch.float64)
    x, z, delta, A, B, C = block.ssm_inputs(u)
    if isinstance(block, Mamba2Block):
        P = block.config.head_dim
        delta, A = delta.repeat_interleave(P, -1), A.repeat_interleave(P).unsqueeze(-1)
        D = block.D.repeat_interleave(P)
    else:
        D = block.D
    y = selective_scan_reference(x, delta, A, B, C) + D * x
    expected = block.out_proj(y * torch.nn.functional.silu(z))
    torch.testing.assert_close(block(u), expected, rtol=1e-12, atol=1e-12)


def test_mamba2_rejects_bad_heads():
    with pytest.raises(ValueError, match="heads"):
        Mamba2Block(Mamba2Config(8, head_dim=3))


def test_lm_shapes_and_corpus():
    text = stdlib_docstrings(("textwrap", "bisect"))
    assert "textwrap" in text.lower() or "wrap" in text
    corpus = Corpus.from_text(text)
    assert corpus.vocab_size == 96 and len(corpus.train) > len(corpus.val) > 0
    assert int(corpus.train.max()) < corpus.vocab_size
    g = torch.Generator().manual_seed(0)
    w = Corpus.batch(corpus.train, 3, 16, g)
    assert w.shape == (3, 17)
    torch.manual_seed(0)
    for structure in ("mamba1", "mamba2"):
        lm = SelectiveLM(LMConfig(corpus.vocab_size, 16, 2, structure, 8, head_dim=8))
        assert lm(w[:, :-1]).shape == (3, 16, corpus.vocab_size)
        assert lm.state_dims == (8, 8)
