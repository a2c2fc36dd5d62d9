"""Identify a black-box LTI block from its impulse response: probe its properties, then ERA.

A module that maps (batch, T, m) → (batch, T, p) linearly, causally and time-invariantly from
rest is a convolution y_t = Σ_{k ≤ t} h_k u_{t−k}, whatever its code does (FFT convolution, a
Python loop, a custom kernel). Its first T taps are read with m unit impulses and realised by
:func:`~ssmcompile.numerics.era.era` as a dense (A, B, C, D) in our convention.

The five properties are checked on seeded random probes, in the order memory, linearity,
causality, time-invariance, and finally that the taps reproduce the output on a random input.
A probe can miss a violation it does not excite, and taps past T are never seen, so what the
result certifies is the fit to the first T taps (the residual bounds the error's ℓ2 gain for
inputs of at most T steps), not that the module is LTI. The caveat string says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MatchError, ShapeError
from ..numerics.era import era
from ..numerics.system import LTISystem
from .canonical import CanonicalSSM
from .pass_manager import fingerprint
from .precision import at_precision, describe_exception, native_dtype, primary_output

__all__ = ["IdentifiedLTI", "identify_lti", "LTIProbeAdapter"]

_BATCH = 2


@dataclass(frozen=True)
class IdentifiedLTI:
    """An identified block: ``system`` (real dense float64, A (n, n), B (n, m), C (p, n),
    D (p, m)), the ``horizon`` T, its ``order`` n, the ERA ``residual`` (an ℓ2-gain bound on
    the identification error for inputs of at most T steps), the finite-horizon ``hankel_sv``
    (descending float64) and a one-sentence ``caveat`` for reports."""

    system: LTISystem
    horizon: int
    order: int
    residual: float
    hankel_sv: torch.Tensor
    caveat: str


def _device(module: nn.Module) -> torch.device:
    t = next(iter([*module.parameters(), *module.buffers()]), None)
    return t.device if t is not None else torch.device("cpu")


class _Probe:
    """Runs a private eval-mode copy of the module; every failure becomes a MatchError."""

    def __init__(self, module: nn.Module, in_features: int, dtype: torch.dtype):
        try:
            m = at_precision(module, dtype)
        except Exception as err:  # noqa: BLE001 - any user-side failure is a match failure
            raise _raised(err) from None
        self.module, self.m, self.dtype = m, in_features, dtype
        self.device = _device(m)
        self.eps = torch.finfo(dtype).eps
        self.p: int | None = None

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """u (b, T, m) float64 → y (b, T, p) float64, computed in the probe's dtype."""
        try:
            with torch.no_grad():
                out = self.module(u.to(device=self.device, dtype=self.dtype))
        except Exception as err:  # noqa: BLE001 - any user-side failure is a match failure
            raise _raised(err) from None
        try:
            y = primary_output(out)
        except MatchError:
            raise MatchError(f"forward returned {type(out).__name__}, not a tensor") from None
        b, T = u.shape[:2]
        if y.ndim != 3 or tuple(y.shape[:2]) != (b, T) or self.p not in (None, y.shape[2]):
            raise MatchError(f"not shape-preserving in length: input {tuple(u.shape)} gave "
                             f"output {tuple(y.shape)}; expected ({b}, {T}, p)")
        if y.is_complex() or not y.dtype.is_floating_point:
            raise MatchError(f"output dtype {y.dtype} is not real floating point")
        if not bool(torch.isfinite(y).all()):
            raise MatchError("output is not finite on a random probe")
        self.p = y.shape[2]
        return y.detach().to(device="cpu", dtype=torch.float64)


def _raised(err: Exception) -> MatchError:
    return MatchError(f"raised {describe_exception(err)}")


def _rel(err: torch.Tensor, *refs: torch.Tensor) -> float:
    scale = max([float(r.abs().max()) if r.numel() else 0.0 for r in refs] + [1e-300])
    return float(err.abs().max()) / scale if err.numel() else 0.0


def _convolve(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """y_t = Σ_{k ≤ t} h_k u_{t−k}. h (T, p, m), u (b, T, m) → (b, T, p)."""
    y = u.new_zeros(*u.shape[:2], h.shape[1])
    for k in range(u.shape[1]):
        y[:, k:] += u[:, : u.shape[1] - k] @ h[k].T
    return y


def _check_lti(f: _Probe, T: int, tol: float) -> torch.Tensor:
    """Runs the property probes and returns the taps h (T, p, m), h[k] = h_k."""
    g = torch.Generator().manual_seed(0)
    u1 = torch.randn(_BATCH, T, f.m, generator=g, dtype=torch.float64)
    u2 = torch.randn(_BATCH, T, f.m, generator=g, dtype=torch.float64)
    y1, y2 = f(u1), f(u2)

    t0 = T // 2
    bumped = u1.clone()
    bumped[:, t0] += torch.randn(_BATCH, f.m, generator=g, dtype=torch.float64)
    moved = f(bumped) - y1
    moved[:, t0] = 0.0
    if _rel(moved, y1) <= tol:
        raise MatchError("has no memory: the output at time t depends only on the input at t "
                         "(a memoryless map such as nn.Linear is not a state-space block)")

    y0 = f(torch.zeros_like(u1))
    if _rel(y0, y1) > tol:
        raise MatchError(f"not linear: zero input gives output {_rel(y0, y1):.1e} of the "
                         "output scale (a bias?)")
    a, b = 0.7, -1.3
    err = _rel(f(a * u1 + b * u2) - a * y1 - b * y2, a * y1, b * y2)
    if err > tol:
        raise MatchError(f"not linear: superposition error {err:.1e}")

    tail = u1.clone()
    tail[:, t0:] = u2[:, t0:]
    err = _rel(f(tail)[:, :t0] - y1[:, :t0], y1)
    if err > tol:
        raise MatchError(f"not causal: changing inputs from step {t0} on changes earlier "
                         f"outputs by {err:.1e}")

    d = max(1, T // 4)
    late = torch.zeros_like(u1)
    late[:, d:] = u1[:, : T - d]
    y_late = f(late)
    expected = torch.cat([torch.zeros_like(y1[:, :d]), y1[:, : T - d]], dim=1)
    err = _rel(y_late - expected, y1)
    if err > tol:
        raise MatchError(f"not time-invariant: delaying the input by {d} steps does not delay "
                         f"the output (error {err:.1e})")

    impulses = torch.zeros(f.m, T, f.m, dtype=torch.float64)
    impulses[torch.arange(f.m), 0, torch.arange(f.m)] = 1.0
    h = f(impulses).permute(1, 2, 0).contiguous()  # (T, p, m)
    if _rel(h[1:], h) <= tol:
        raise MatchError("has no memory: every impulse-response tap h_k, k ≥ 1, is negligible")
    err = _rel(_convolve(h, u2) - y2, y2)
    if err > tol:
        raise MatchError(f"not LTI: the impulse response does not reproduce the output on a "
                         f"random input (error {err:.1e}); does the block mix the batch?")
    return h


def identify_lti(
    module: nn.Module,
    in_features: int,
    horizon: int,
    *,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
) -> IdentifiedLTI:
    """Check that ``module`` is an LTI block on (batch, T, in_features) inputs; identify it.

    Probes run on a deep copy in eval mode under no_grad, with its floating (complex) tensors
    and the inputs cast to ``dtype`` (complex to the matching complex dtype); pass the module's
    own dtype when float64 fails (e.g. a forward that casts its input). Tolerances are
    √eps of the least precise of ``dtype`` and the module's float dtypes, relative to the output
    scale (1.5e-8 for float64, 3.5e-4 for float32).

    ERA uses s = (T − 1) // 2 block rows, the most the T − 1 taps h_1..h_{T−1} allow (the
    shifted Hankel needs h_{2s}), and orders down to ``rtol``·σ_1 (default max(1e-10, 300·eps),
    above the rounding noise of the taps).

    Raises ShapeError (bad ``in_features``, ``horizon`` < 3 or non-float ``dtype``) and
    MatchError with a one-line reason (a failed property, an exception inside the module, or an
    identified system with a pole |λ| ≥ 1).
    """
    for name, v, lo in (("in_features", in_features, 1), ("horizon", horizon, 3)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ShapeError(f"{name} must be an integer ≥ {lo}, got {v!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ShapeError(f"dtype must be a real floating dtype, got {dtype!r}")
    f = _Probe(module, in_features, dtype)
    T = horizon
    h = _check_lti(f, T, tol=f.eps**0.5)
    if rtol is None:
        rtol = max(1e-10, 300.0 * f.eps)
    result = era(h[0], h[1:], rtol=rtol, block_rows=(T - 1) // 2)
    system = result.system
    if result.order:
        radius = float(torch.linalg.eigvals(system.A).abs().max())
        if radius >= 1.0:
            raise MatchError(f"identified system is unstable (max |λ| = {radius:.6g}); is the "
                             "block stable, and the horizon long enough to see its decay?")
    caveat = (f"identified from its first {T} impulse-response taps (ERA order {result.order}, "
              f"fit residual {result.residual:.1e}); the bound covers inputs up to {T} steps, "
              "and linearity, causality and time-invariance were checked on random probes, "
              "not proven")
    return IdentifiedLTI(system, T, result.order, result.residual, result.hankel_sv, caveat)


class LTIProbeAdapter:
    """Adapter for a black-box LTI module identified by :func:`identify_lti`.

    The last identification is cached against the module's fingerprint (identity and in-place
    version of every tensor), so matching, analysis, rewrite and report share one probe run
    while a module that trained in between is read afresh. Rebuilds as a dense
    :class:`CanonicalSSM`. ``read_error`` is the identification residual, which the rewrite
    adds to the truncation bound; ``caveat`` the finite-horizon sentence for the report.
    """

    kind = "lti-probe"
    certified = True

    def __init__(self, in_features: int, horizon: int, dtype: torch.dtype = torch.float64):
        self.in_features, self.horizon, self.dtype = in_features, horizon, dtype
        self._cache: tuple[tuple, IdentifiedLTI] | None = None

    def identify(self, module: nn.Module) -> IdentifiedLTI:
        key = (id(module), fingerprint(module))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        result = identify_lti(module, self.in_features, self.horizon, dtype=self.dtype)
        self._cache = (key, result)
        return result

    def read_error(self, module: nn.Module) -> float:
        return self.identify(module).residual

    def caveat(self, module: nn.Module) -> str:
        return self.identify(module).caveat

    def read(self, module: nn.Module) -> LTISystem:
        return self.identify(module).system

    def state_dim(self, module: nn.Module) -> int:
        return self.identify(module).order

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        new = CanonicalSSM(system, dtype=native_dtype(module))
        return new.to(_device(module)).train(module.training)
