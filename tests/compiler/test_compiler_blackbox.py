"""Black-box LTI blocks inside whole models, through ``analyze``/``reduce``: an FFT-convolution
S4D-style layer and a Python-loop recurrence (neither calls ssmcompile's ops) are found by the
``lti-probe`` rule, reduced to a canonical layer, and verified against bound + fit residual."""

from __future__ import annotations

import copy

import pytest
import torch
from test_compiler_lti_probe import LoopRecurrence, S4DConv
from torch import nn

import ssmcompile
from ssmcompile.api import prepare
from ssmcompile.compiler import CanonicalSSM, rewrite_block


class Net(nn.Module):
    def __init__(self, mixer: nn.Module, width: int, out: int):
        super().__init__()
        self.encoder = nn.Linear(2, width)
        self.mixer = mixer
        self.norm = nn.LayerNorm(out)
        self.head = nn.Linear(out, 3)

    def forward(self, x):
        h = torch.relu(self.encoder(x))
        return self.head(self.norm(torch.tanh(self.mixer(h))))


MODELS = {
    "s4d-fft": lambda: Net(S4DConv(3, 4), 3, 3).double().eval(),
    "python-loop": lambda: Net(LoopRecurrence(m=3, n=5, p=2), 3, 2).double().eval(),
}
ORDERS = {"s4d-fft": 24, "python-loop": 5}


def _x(length=48):
    return torch.randn(2, length, 2, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


@pytest.mark.parametrize("name", list(MODELS))
def test_black_box_block_is_found_and_full_rank_is_exact(name):
    model, x = MODELS[name](), _x()
    state = prepare(model, x)
    assert [(b.name, b.kind, b.rule) for b in state.blocks] == [
        ("mixer", "lti-probe", "lti-probe")]
    n = state.blocks[0].adapter.state_dim(model.mixer)
    assert n == ORDERS[name]
    # full rank (the policy would keep such a block as it is, so rewrite it directly): the block
    # is re-emitted as a canonical layer with the same outputs
    state.model = copy.deepcopy(model)
    result = rewrite_block(state, state.blocks[0], n)
    assert result.rank == n and state.records["mixer"].bound < 1e-8
    with torch.no_grad():
        y, y_full = model(x), state.model(x)
    assert isinstance(state.model.mixer, CanonicalSSM)
    rel = float((y_full - y).abs().max() / y.abs().max())
    assert rel <= 1e-6, rel
    assert any("impulse-response taps" in note for note in state.notes)


@pytest.mark.parametrize("name", list(MODELS))
def test_black_box_block_reduced_error_is_within_bound(name):
    model, x = MODELS[name](), _x()
    rank = ORDERS[name] // 2
    reduced, report = ssmcompile.reduce(model, x, rank=rank)
    (row,) = report.blocks
    assert (row.state_dim, row.rank, row.reduced) == (ORDERS[name], rank, True)
    assert 0 < row.measured_error <= row.bound * (1 + 1e-6) + 1e-8
    assert reduced.mixer.state_dim == rank
    text = str(report)
    assert "mixer" in text and f"{ORDERS[name]} → {rank}" in text
    print(f"{name}: n {row.state_dim} → {rank}: measured {row.measured_error:.3e}, "
          f"bound {row.bound:.3e}")


def test_pointwise_modules_are_not_reported_as_rejected_candidates():
    """A model's MLPs and norms have no memory: the black-box rule skips them silently, while a
    nonlinear sequence mixer is reported with the property that failed."""

    class Smear(nn.Module):  # mixes time, but nonlinearly
        def forward(self, u):
            return torch.tanh(torch.cumsum(u, dim=1))

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(3, 3)

        def forward(self, u):
            return u * torch.sigmoid(self.w(u))

    model = nn.Sequential(nn.Linear(2, 3), Gate(), Smear()).double().eval()
    state = prepare(model, _x())
    assert state.blocks == []
    assert [(f.name, f.rule) for f in state.failures] == [("2", "lti-probe")]
    assert "not linear" in state.failures[0].reason
