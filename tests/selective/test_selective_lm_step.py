"""SelectiveLM step mode: token-by-token logits equal the sequence forward's, full and reduced."""

from __future__ import annotations

import pytest
import torch

import ssmcompile
from ssmcompile.errors import ShapeError
from ssmcompile.selective import LMConfig, SelectiveLM

VOCAB = 30


def _lm(structure: str, dtype: torch.dtype = torch.float64) -> SelectiveLM:
    torch.manual_seed(0)
    config = LMConfig(VOCAB, 16, 2, structure, 8, head_dim=8, n_groups=2)
    return SelectiveLM(config).to(dtype).eval()


def _ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _streamed(lm: SelectiveLM, ids: torch.Tensor) -> torch.Tensor:
    """(batch, L) ids → (batch, L, vocab) logits, one ``step`` per token from zero state."""
    state = lm.initial_state(ids.shape[0])
    logits = []
    for k in range(ids.shape[1]):
        logits_k, state = lm.step(ids[:, k], state)
        logits.append(logits_k)
    return torch.stack(logits, dim=1)


@pytest.mark.parametrize("structure", ["mamba1", "mamba2"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)],
                         ids=["f64", "f32"])
def test_step_logits_equal_the_sequence_logits(structure, dtype, tol):
    lm = _lm(structure, dtype)
    ids = _ids(3, 20, seed=1)
    with torch.no_grad():
        want, got = lm(ids), _streamed(lm, ids)
    assert got.shape == want.shape == (3, 20, VOCAB) and got.dtype == dtype
    assert (got - want).abs().max().item() <= tol
    # The carried state matters: restarting from zeros at token 5 gives other logits there.
    with torch.no_grad():
        fresh, _ = lm.step(ids[:, 5], lm.initial_state(3))
    assert (fresh - want[:, 5]).abs().max().item() > 1e-3


@pytest.mark.parametrize("structure", ["mamba1", "mamba2"])
def test_initial_state_is_zeros_of_each_layers_current_size(structure):
    lm = _lm(structure)
    d_inner = 2 * 16
    state = lm.initial_state(4)
    assert len(state) == 2
    for conv, ssm in state:
        assert conv.shape == (4, d_inner, 3) and ssm.shape == (4, d_inner, 8)
        assert conv.dtype == ssm.dtype == torch.float64
        assert not conv.any() and not ssm.any()


@pytest.mark.parametrize("structure", ["mamba1", "mamba2"])
def test_reduced_model_steps_with_reduced_state_and_matches_its_forward(structure):
    lm = _lm(structure)
    ids = _ids(2, 24, seed=0)
    reduced, _, _ = ssmcompile.run_pipeline(lm, ids, "hankel-analysis,balanced-truncation{rank=4}")
    assert reduced.state_dims == (4, 4)
    assert [tuple(ssm.shape) for _, ssm in reduced.initial_state(2)] == [(2, 32, 4)] * 2
    x = _ids(2, 15, seed=2)
    with torch.no_grad():
        want, got = reduced(x), _streamed(reduced, x)
        assert (got - want).abs().max().item() <= 1e-10
        assert (want - lm(x)).abs().max().item() > 1e-6  # it is the reduced model


def test_step_rejects_a_state_for_another_number_of_layers():
    lm = _lm("mamba2")
    with pytest.raises(ShapeError, match="2 layers"):
        lm.step(_ids(1, 1, 0)[:, 0], lm.initial_state(1)[:1])
