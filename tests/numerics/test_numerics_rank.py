"""Rank rules against a plain-Python reading of the paper's formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmcompile.errors import RankError
from ssmcompile.numerics import energy_curve, energy_kept, energy_rank, numerical_order, passes_gate


def _rank_loop(sigma, tau, squared=False):
    vals = [s * s if squared else s for s in sigma]
    total = sum(vals)
    acc = 0.0
    for r, v in enumerate(vals, start=1):
        acc += v
        if acc >= (1 - tau) * total:
            return r
    return len(vals)


_hsv = st.lists(st.floats(1e-6, 1e3), min_size=1, max_size=40).map(
    lambda xs: torch.tensor(sorted(xs, reverse=True), dtype=torch.float64)
)


@settings(max_examples=60, deadline=None)
@given(hsv=_hsv, tau=st.floats(1e-4, 0.9), squared=st.booleans())
def test_energy_rank_matches_loop(hsv, tau, squared):
    r = energy_rank(hsv, tau, squared=squared)
    expected = _rank_loop(hsv.tolist(), tau, squared)
    # Exact ties at the threshold may fall either way by one ulp; otherwise identical.
    tie = abs(float(energy_kept(hsv, expected, squared=squared)) - (1 - tau)) < 1e-12
    assert r == expected or tie
    assert float(energy_kept(hsv, r, squared=squared)) >= (1 - tau) * (1 - 1e-12)


def test_sum_of_sigma_not_squared_keeps_more():
    hsv = torch.tensor([1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125], dtype=torch.float64)
    assert energy_rank(hsv, 0.1) == 4  # 1.875/1.96875 = 0.952
    assert energy_rank(hsv, 0.1, squared=True) == 2  # 1.25/1.333 = 0.9375


def test_batched_rank_is_max_over_items():
    hsv = torch.tensor([[1.0, 1e-9, 1e-9], [1.0, 1.0, 1.0]], dtype=torch.float64)
    assert energy_rank(hsv, 0.01) == 3 and energy_rank(hsv[0], 0.01) == 1


def test_curve_and_kept():
    hsv = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert torch.allclose(energy_curve(hsv), torch.tensor([0.75, 1.0], dtype=torch.float64))
    assert float(energy_kept(hsv, 0)) == 0.0 and float(energy_kept(hsv, 2)) == 1.0
    zero = torch.zeros(3, dtype=torch.float64)
    assert energy_rank(zero, 0.1) == 1 and numerical_order(zero) == 0


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_tau(tau):
    with pytest.raises(RankError) as err:
        energy_rank(torch.ones(3, dtype=torch.float64), tau)
    assert "\n" not in str(err.value)


def test_bad_hsv_and_rank():
    with pytest.raises(RankError):
        energy_rank(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.1)
    with pytest.raises(RankError):
        energy_kept(torch.ones(3, dtype=torch.float64), 4)


def test_gate():
    assert passes_gate(94, 100) and not passes_gate(95, 100) and not passes_gate(100, 100)
    assert passes_gate(3, 4, gate=1.0)
    with pytest.raises(RankError):
        passes_gate(3, 4, gate=0.0)
    with pytest.raises(RankError):
        passes_gate(5, 4)


def test_numerical_order():
    hsv = torch.tensor([1.0, 1e-3, 1e-20, 0.0], dtype=torch.float64)
    assert numerical_order(hsv) == 2 and numerical_order(hsv, rtol=0.0) == 3
