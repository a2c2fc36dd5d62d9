"""The bundled adapters for lru-pytorch's ``LRU`` and s5-pytorch's ``S5`` on users' models.

Each family: a small user model (linear encoder → the package's layer → nonlinearity → head)
built from the package's own constructors with random init. Shown per family: found without
any register call; a full-rank rewrite leaves outputs unchanged; ``reduce`` gives a layer of the
package's class with measured error ≤ bound and leaves the caller's model bit-identical; a user
training loop with ``ReductionScheduler`` shrinks it twice; a safetensors round trip into a
freshly constructed smaller model; and ``read`` checked against the package's own forward.

Precision: lru-pytorch writes its outputs into buffers of the global default dtype, so its
float64 checks run under ``torch.set_default_dtype(torch.float64)``; s5-pytorch casts B to
complex64 inside every forward, so its float64 checks carry float32 rounding of B (tolerances
below say which).
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from LRU_pytorch.LRU import LRU
from s5.s5_model import S5, S5Block, discretize_bilinear
from safetensors.torch import load_file, save_file
from torch import nn

import ssmcompile
from ssmcompile.adapters import adapter_for
from ssmcompile.adapters.lru import MIN_PHASE
from ssmcompile.api import prepare
from ssmcompile.compiler import rewrite_block
from ssmcompile.errors import MatchError, ShapeError, UnstableSystemError
from ssmcompile.numerics.system import LTISystem
from ssmcompile.thirdparty.lru_pytorch import LRUPytorchAdapter
from ssmcompile.thirdparty.s5_pytorch import S5PytorchAdapter
from ssmcompile.train import ReductionScheduler

H, N, D_IN = 4, 8, 2


class LRUNet(nn.Module):
    def __init__(self, n: int = N, d_out: int = 3):
        super().__init__()
        self.enc = nn.Linear(D_IN, H)
        self.lru = LRU(H, H, n)
        self.head = nn.Linear(H, d_out)

    def forward(self, x):
        return self.head(torch.tanh(self.lru(self.enc(x))).mean(1))


class S5Net(nn.Module):
    """The package's S5Block (norms, GEGLU, residuals) around its S5: only S5 is adapted."""

    def __init__(self, n: int = N, d_out: int = 3):
        super().__init__()
        self.enc = nn.Linear(D_IN, H)
        self.block = S5Block(H, n, bidir=False)
        self.head = nn.Linear(H, d_out)

    def forward(self, x):
        return self.head(F.gelu(self.block(self.enc(x))).mean(1))


FAMILIES = {
    "lru": dict(net=LRUNet, layer="lru", cls=LRU, kind="lru-pytorch", adapter=LRUPytorchAdapter),
    "s5": dict(net=S5Net, layer="block.s5", cls=S5, kind="s5-pytorch", adapter=S5PytorchAdapter),
}


def _build(family: str, n: int = N, seed: int = 0, d_out: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FAMILIES[family]["net"](n, d_out)


def _x(batch=3, length=10, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, D_IN, generator=g, dtype=dtype)


def _to_f64(model: nn.Module) -> nn.Module:
    """float64 / complex128 parameters in place (``Module.double()`` leaves complex64 alone)."""
    for p in model.parameters():
        p.data = p.data.to(torch.complex128 if p.is_complex() else torch.float64)
    for m in model.modules():
        if isinstance(m, LRU):
            m.state = m.state.to(torch.complex128)
    return model


@contextlib.contextmanager
def _default_f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _state_dim(family: str, model: nn.Module) -> int:
    layer = model.get_submodule(FAMILIES[family]["layer"])
    return FAMILIES[family]["adapter"]().state_dim(layer)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---- (a) found automatically -----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_found_without_registration(family):
    spec = FAMILIES[family]
    model = _build(family)
    report = ssmcompile.analyze(model, _x())
    assert [(b.name, b.kind, b.rule, b.state_dim) for b in report.blocks] == [
        (spec["layer"], spec["kind"], "registered-layer", N)]
    assert isinstance(adapter_for(model.get_submodule(spec["layer"])), spec["adapter"])


# ---- (b) full-rank rewrite -------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_full_rank_rewrite_leaves_outputs_unchanged(family):
    with _default_f64():
        model = _to_f64(_build(family))
        x = _x(dtype=torch.float64)
        state = prepare(model, x)
        state.model = copy.deepcopy(model)
        (block,) = state.blocks
        rewrite_block(state, block, N)
        new = state.model.get_submodule(FAMILIES[family]["layer"])
        assert type(new) is FAMILIES[family]["cls"]
        assert new is not model.get_submodule(FAMILIES[family]["layer"])
        with torch.no_grad():
            err = _rel(state.model(x), model(x))
    # lru: exact float64 (measured ~5e-16); s5: the forward's complex64 cast of B limits it
    # (measured ~7e-11)
    assert err <= (1e-12 if family == "lru" else 1e-6), f"full-rank relative error {err:.3e}"


# ---- (c) + (d) reduce within bound, caller untouched -----------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_reduce_within_bound_and_caller_bit_identical(family):
    spec = FAMILIES[family]
    model = _build(family)
    x = _x()
    layer = model.get_submodule(spec["layer"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = [id(p) for p in model.parameters()]
    with torch.no_grad():
        y_before = model(x)
    reduced, report = ssmcompile.reduce(model, x, rank=4)
    (row,) = report.blocks
    assert (row.name, row.kind, row.state_dim, row.rank) == (spec["layer"], spec["kind"], N, 4)
    assert row.measured_error <= row.bound, (
        f"measured {row.measured_error:.4e} vs bound {row.bound:.4e}")
    new = reduced.get_submodule(spec["layer"])
    assert type(new) is spec["cls"] and _state_dim(family, reduced) == 4
    # (d) the caller's model: same parameter objects, bit-identical values and outputs
    assert model.get_submodule(spec["layer"]) is layer and _state_dim(family, model) == N
    if family == "lru":  # the package's recurrence start, reassigned by every forward
        assert layer.state.shape == (N,) and not layer.state.any()
    assert [id(p) for p in model.parameters()] == params_before
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(model(x), y_before)
        assert _rel(reduced(x), y_before) < 1.0  # a genuine, not a broken, approximation


# ---- (e) a user training loop with two reduction events --------------------------------------


SSM_LEAVES = ("Lambda", "log_step", "nu_log", "theta_log", "gamma_log")


@pytest.mark.parametrize("family", FAMILIES)
def test_user_training_loop_with_two_events(family):
    model = _build(family, d_out=1).train()
    data = _x(batch=32, length=8, seed=3)
    target = 2 * data[:, :, 0].mean(1, keepdim=True)
    # The user's own groups: the recurrence's parameters at lr × 0.1 without weight decay (the
    # S5/LRU papers' practice). s5-pytorch leaves Re Λ unconstrained and its init puts some
    # |λ| = exp(−Δ/2) within 5e-4 of 1: at the full rate for Λ, a mode crossed |λ| = 1 here.
    def is_ssm(name):
        return name.endswith(SSM_LEAVES)

    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if not is_ssm(n)]},
        {"params": [p for n, p in model.named_parameters() if is_ssm(n)], "lr": 1e-3,
         "weight_decay": 0.0}], lr=1e-2)
    reducer = ReductionScheduler("hankel-analysis,balanced-truncation{fraction=0.5},verify",
                                 [40, 80], data[:8], strict=True)
    g = torch.Generator().manual_seed(4)
    losses, dims = [], []
    name = FAMILIES[family]["layer"]
    for step in range(200):
        model, opt, event = reducer.step(model, opt, step)
        if event is not None:
            dims.append((step, event.dims_before[name], event.dims_after[name]))
            (row,) = event.report.blocks
            assert row.measured_error <= row.bound, (
                f"step {step}: measured {row.measured_error:.4e} vs bound {row.bound:.4e}")
        idx = torch.randint(0, 32, (8,), generator=g)
        loss = F.mse_loss(model(data[idx]), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert dims == [(40, 8, 4), (80, 4, 2)]
    assert all(math.isfinite(v) for v in losses)
    layer = model.get_submodule(name)
    assert type(layer) is FAMILIES[family]["cls"] and _state_dim(family, model) == 2
    # the optimizer holds exactly the final model's parameters, each in the user's group
    named = dict(model.named_parameters())
    groups = [{id(p) for p in group["params"]} for group in opt.param_groups]
    assert groups == [{id(p) for n, p in named.items() if not is_ssm(n)},
                      {id(p) for n, p in named.items() if is_ssm(n)}]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, f"loss {first:.4f} → {last:.4f}"


# ---- (f) save → reload in the family's own format --------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_safetensors_round_trip_into_fresh_smaller_model(family, tmp_path):
    model = _build(family)
    x = _x()
    reduced, _ = ssmcompile.reduce(model, x, rank=3)
    path = tmp_path / "reduced.safetensors"
    save_file(reduced.state_dict(), str(path))  # tensors only: no pickled code
    fresh = _build(family, n=3, seed=9)  # the user's class, its layer built with 3 states
    fresh.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), reduced(x))


# ---- (g) read against the package's own forward ----------------------------------------------


def _impulse_response(system: LTISystem, K: int) -> torch.Tensor:
    """(m, K, p): y_k for a unit impulse at k = 0 in input j: Re(C λ^k B[:, j]) + D[:, j]·δ_k0."""
    powers = system.A.unsqueeze(0) ** torch.arange(K, dtype=torch.float64).unsqueeze(1)
    y = torch.einsum("pn,kn,nm->mkp", system.C, powers, system.B).real
    y[:, 0] += system.D.T
    return y


def _impulses(m: int, K: int, dtype) -> torch.Tensor:
    u = torch.zeros(m, K, m, dtype=dtype)
    u[torch.arange(m), 0, torch.arange(m)] = 1.0
    return u


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_lru_read_is_the_package_forward(precision):
    K = 12
    layer = _build("lru").lru
    if precision == "float64":
        _to_f64(layer)
        ctx, dtype, tol = _default_f64(), torch.float64, 1e-12
    else:
        ctx, dtype, tol = contextlib.nullcontext(), torch.float32, 1e-5
    system = LRUPytorchAdapter().read(layer)
    assert system.A.dtype == torch.complex128 and system.D.shape == (H, H)
    with ctx, torch.no_grad():
        y = layer(_impulses(H, K, dtype))
    err = _rel(y.double(), _impulse_response(system, K))
    assert err <= tol, f"impulse response vs C λ^k B: {err:.3e}"


@pytest.mark.parametrize("perturb", [False, True])
def test_s5_read_is_the_package_forward_with_all_modes(perturb):
    K = 12
    layer = _to_f64(_build("s5")).block.s5
    Lam = layer.seq.Lambda.detach()
    # the package stores all P modes (its HiPPO init pairs them by conjugation, in reverse
    # order) and outputs Re(C x): no P/2 storage, no factor 2
    assert Lam.shape == (N,) and torch.allclose(Lam.flip(0), Lam.conj(), atol=1e-5)
    if perturb:  # break the pairs, as training does; values kept float32-representable
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in layer.parameters():
                noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
                if p.is_complex():
                    noise = torch.complex(noise, torch.randn(p.shape, generator=g,
                                                             dtype=torch.float64))
                low = torch.complex64 if p.is_complex() else torch.float32
                p.copy_((p + 0.1 * noise).to(low))
    system = S5PytorchAdapter().read(layer)
    with torch.no_grad():
        y = layer(_impulses(H, K, torch.float64))
    err = _rel(y, _impulse_response(system, K))
    # float64 throughout (B is float32-representable, so the forward's complex64 cast is exact)
    assert err <= 1e-10, f"impulse response vs C λ^k B̄: {err:.3e}"


# ---- rebuild: parameterisation, dtype, RNG, guards -------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuild_keeps_dtype_mode_grad_and_draws_no_random_numbers(family):
    spec = FAMILIES[family]
    adapter = spec["adapter"]()
    layer = _build(family).get_submodule(spec["layer"]).eval()
    frozen = next(iter(layer.parameters()))
    frozen.requires_grad_(False)
    system = adapter.read(layer)
    rng = torch.get_rng_state()
    new = adapter.rebuild(layer, system)
    assert torch.equal(torch.get_rng_state(), rng)
    assert type(new) is spec["cls"] and new is not layer and not new.training
    old = dict(layer.named_parameters())
    for name, p in new.named_parameters():
        assert (p.dtype, p.device, p.requires_grad) == (
            old[name].dtype, old[name].device, old[name].requires_grad), name
    again = adapter.read(new)
    for a, b in [(again.A, system.A), (again.B, system.B), (again.C, system.C)]:
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)  # float32/complex64 storage
    if family == "lru":
        assert new.state.shape == (N,) and new.state.is_complex() and not new.state.any()


def test_lru_guards():
    adapter = LRUPytorchAdapter()
    layer = _build("lru").lru
    B = torch.randn(3, H, dtype=torch.complex128)
    C = torch.randn(H, 3, dtype=torch.complex128)
    unstable = LTISystem(torch.tensor([0.5, 1.01, 0.3j], dtype=torch.complex128), B, C)
    with pytest.raises(UnstableSystemError):
        adapter.rebuild(layer, unstable)
    real_mode = LTISystem(torch.tensor([0.5, 0.9j, 0.0], dtype=torch.complex128), B, C)
    new = adapter.rebuild(_to_f64(copy.deepcopy(layer)), real_mode)
    assert torch.isfinite(new.theta_log).all()
    assert float(new.theta_log[0].detach()) == pytest.approx(math.log(MIN_PHASE))
    back = adapter.read(new)
    assert torch.allclose(back.A, real_mode.A, atol=1e-11)
    assert torch.allclose(back.B, B) and torch.allclose(back.C, C)
    assert torch.equal(back.D, adapter.read(layer).D)  # D None: the layer's own is kept
    with pytest.raises(ShapeError, match="inputs"):
        adapter.rebuild(layer, LTISystem(real_mode.A, B[:, :2], C))
    with pytest.raises(ShapeError, match="diagonal"):
        adapter.rebuild(layer, LTISystem(torch.eye(3, dtype=torch.complex128) * 0.5, B, C))


def test_s5_guards_and_unrepresentable_systems():
    adapter = S5PytorchAdapter()
    layer = _build("s5").block.s5
    system = adapter.read(layer)
    with pytest.raises(ShapeError, match="diagonal feedthrough"):
        adapter.rebuild(layer, LTISystem(system.A, system.B, system.C, torch.ones(H, H)))
    with pytest.raises(ShapeError, match="diagonal system"):
        adapter.rebuild(layer, LTISystem(torch.diag(system.A), system.B, system.C))
    with pytest.raises(UnstableSystemError):
        adapter.rebuild(layer, LTISystem(system.A * 50, system.B, system.C))
    for kwargs, why in [(dict(bidir=True), "anticausal"), (dict(liquid=True), "not LTI")]:
        with torch.random.fork_rng(devices=[]):
            odd = S5(H, N, **kwargs)
        with pytest.raises(MatchError, match=why):
            adapter.state_dim(odd)


def test_s5_bilinear_discretisation_round_trips():
    adapter = S5PytorchAdapter()
    layer = _to_f64(_build("s5")).block.s5
    layer.seq.discretize = discretize_bilinear
    system = adapter.read(layer)
    with torch.no_grad():
        y = layer(_impulses(H, 8, torch.float64))
    assert _rel(y, _impulse_response(system, 8)) <= 1e-10
    new = adapter.rebuild(layer, system)
    assert new.seq.discretize is discretize_bilinear
    again = adapter.read(new)
    assert torch.allclose(again.A, system.A, atol=1e-12)
    assert torch.allclose(again.B, system.B, atol=1e-12)
    flipped = LTISystem(torch.cat([system.A[:-1], system.A.new_tensor([-1.0 + 0j])]),
                        system.B, system.C)
    with pytest.raises(UnstableSystemError):  # λ = −1: no Tustin preimage, and unstable
        adapter.rebuild(layer, flipped)
