"""rebuild(layer, balanced_truncation(read(layer)).system): exact at full rank, within the
certified H∞ bound 2·Σ tail at reduced rank (in the ℓ2 sense: ‖y − y_r‖ ≤ bound·‖u‖)."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.adapters import adapter_for
from ssmcompile.layers import LRU, S4D, S5, DenseLTI

numerics = pytest.importorskip("ssmcompile.numerics")
balanced_truncation = numerics.balanced_truncation
F64 = torch.float64


def compressible(cls, H: int, n: int):
    """A layer whose Hankel singular values decay (fast modes), so truncation is meaningful."""
    if cls is LRU:
        return LRU(H, n, r_min=0.05, r_max=0.9, dtype=F64)
    if cls is DenseLTI:
        return DenseLTI(H, n, r_min=0.05, r_max=0.8, dtype=F64)
    return cls(H, n, dt_min=0.5, dt_max=2.0, dtype=F64)


@pytest.mark.parametrize("cls", [LRU, S5, S4D, DenseLTI])
def test_rebuild_from_balanced_truncation(cls):
    torch.manual_seed(20)
    H, n, r = 3, 10, 5
    layer = compressible(cls, H, n)
    adapter = adapter_for(layer)
    sys = adapter.read(layer)
    u = torch.randn(4, 40, H, dtype=F64)
    with torch.no_grad():
        y = layer(u)

    full = balanced_truncation(sys.A, sys.B, sys.C, sys.D, n)
    same = adapter.rebuild(layer, full.system)
    with torch.no_grad():
        err_full = float((same(u) - y).abs().max())
    assert err_full <= 1e-8 * max(1.0, float(y.abs().max()))

    res = balanced_truncation(sys.A, sys.B, sys.C, sys.D, r)
    small = adapter.rebuild(layer, res.system)
    assert small.state_dim == r and type(small) is cls
    with torch.no_grad():
        e = small(u) - y
    assert float(e.abs().max()) > 0
    if cls is S4D:  # per channel: each SISO system has its own bound (H,)
        err = e.pow(2).sum(dim=1).sqrt()  # (batch, H)
        budget = res.bound * u.pow(2).sum(dim=1).sqrt()
    else:
        err = e.pow(2).sum(dim=(1, 2)).sqrt()  # (batch,)
        budget = res.bound * u.pow(2).sum(dim=(1, 2)).sqrt()
    assert bool((err <= budget * (1 + 1e-9)).all())
