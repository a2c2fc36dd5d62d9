"""Rank stability of Hankel singular values over training (experiment C's measures).

The full (never reduced) model keeps the identity of its modes — state i is parameter row i at
every step — so the states a truncation would keep early in training can be compared with the
ones it would keep at the end. Three measures, each of snapshot t against the final one:

- ``topr_overlap``: |top-r modes at t ∩ top-r modes at the end| / r, modes ranked by their
  modal Hankel score s_i = ‖b_i‖·‖c_i‖ / (1 − |λ_i|²) (the HSV of mode i on its own, which
  the true HSVs approach when modes are well separated). Chance level: r / n.
- ``kendall``: Kendall's τ-b between the modal scores at t and at the end (all n modes).
- ``subspace_overlap``: ‖Q_tᴴ Q_end‖²_F / r with Q an orthonormal basis of the r-dimensional
  state subspace balanced truncation keeps (span of L_P V_r, the columns of T that survive):
  1 = the same subspace, r / n = chance. Needs no mode identity, so it also sees mixing.

r is what the τ rule picks on the *final* spectrum for each τ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssmcompile.numerics import LTISystem, balancing_svd, energy_rank, hankel_singular_values


def modal_scores(system: LTISystem) -> np.ndarray:
    """(n,) modal Hankel scores of a diagonal system (see the module docstring)."""
    lam = system.A.to(torch.complex128)
    b = torch.linalg.vector_norm(system.B.to(torch.complex128), dim=-1)  # B (n, m) → (n,)
    c = torch.linalg.vector_norm(system.C.to(torch.complex128), dim=-2)  # C (p, n) → (n,)
    return (b * c / (1.0 - lam.abs() ** 2)).numpy()


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b of two equally long score vectors (O(n²) memory; n ≤ a few thousand)."""
    iu = np.triu_indices(len(a), 1)
    x = np.sign(a[:, None] - a[None, :])[iu]
    y = np.sign(b[:, None] - b[None, :])[iu]
    den = np.sqrt(float(np.count_nonzero(x)) * float(np.count_nonzero(y)))
    return float((x * y).sum() / den) if den > 0 else 0.0


def topr_overlap(a: np.ndarray, b: np.ndarray, r: int) -> float:
    """Fraction of the r highest-scoring indices that ``a`` and ``b`` share."""
    top_a = set(np.argsort(-a, kind="stable")[:r].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:r].tolist())
    return len(top_a & top_b) / r


def kept_subspace(system: LTISystem, r: int) -> torch.Tensor:
    """(n, r) orthonormal basis of the state directions balanced truncation keeps at rank r."""
    A = system.A.to(torch.complex128)
    bal = balancing_svd(A, system.B.to(torch.complex128), system.C.to(torch.complex128))
    directions = bal.L_P @ bal.Vh[:r].mH  # T[:, :r] up to the Σ_r^{-1/2} column scaling
    return torch.linalg.qr(directions).Q


def subspace_overlap(q_a: torch.Tensor, q_b: torch.Tensor) -> float:
    """‖Q_aᴴ Q_b‖²_F / r for two (n, r) orthonormal bases: mean cos² of the principal angles."""
    return float(torch.linalg.matrix_norm(q_a.mH @ q_b) ** 2 / q_a.shape[-1])


def as_single_system(system: LTISystem) -> LTISystem:
    """A batch of independent diagonal systems (S4D's H SISO channels: A (H, N), B (H, N, 1),
    C (H, 1, N)) as the one block-diagonal (H·N)-state system with H inputs and outputs that
    the layer is; its Gramians are block diagonal, so its HSVs are the union of the channels'.
    Unbatched systems are returned as they are."""
    if not (system.is_diagonal and system.A.ndim == 2):
        return system
    H, N = system.A.shape
    m, p = system.B.shape[-1], system.C.shape[-2]
    B = torch.zeros(H * N, H * m, dtype=system.B.dtype)
    C = torch.zeros(H * p, H * N, dtype=system.C.dtype)
    for h in range(H):
        B[h * N:(h + 1) * N, h * m:(h + 1) * m] = system.B[h]
        C[h * p:(h + 1) * p, h * N:(h + 1) * N] = system.C[h]
    return LTISystem(system.A.reshape(H * N), B, C)


def stability_report(snapshots: list[tuple[int, dict[str, LTISystem]]],
                     taus: tuple[float, ...]) -> dict:
    """Every measure of every snapshot against the last one, per block (JSON-able).

    ``snapshots``: (step, block name → system) in step order; the last is the reference.
    """
    snapshots = [(s, {k: as_single_system(v) for k, v in systems.items()})
                 for s, systems in snapshots]
    steps = [s for s, _ in snapshots]
    final = snapshots[-1][1]
    blocks = {}
    for name, ref in final.items():
        ref_hsv = hankel_singular_values(ref.A, ref.B, ref.C)
        ref_scores = modal_scores(ref)
        n = ref.state_dim
        ranks = {str(t): int(energy_rank(ref_hsv, t)) for t in taus}
        ref_bases = {t: kept_subspace(ref, r) for t, r in ranks.items()}
        out = {"n": n, "ranks": ranks, "kendall": [], "hsv": [], "tau_rank": {t: [] for t in ranks},
               "topr_overlap": {t: [] for t in ranks}, "subspace_overlap": {t: [] for t in ranks}}
        for _, systems in snapshots:
            system = systems[name]
            hsv = hankel_singular_values(system.A, system.B, system.C)
            scores = modal_scores(system)
            out["kendall"].append(kendall_tau(scores, ref_scores))
            out["hsv"].append([float(f"{v:.4g}") for v in (hsv / hsv[0]).tolist()])
            for t, r in ranks.items():
                out["tau_rank"][t].append(int(energy_rank(hsv, float(t))))
                out["topr_overlap"][t].append(topr_overlap(scores, ref_scores, r))
                out["subspace_overlap"][t].append(
                    subspace_overlap(kept_subspace(system, r), ref_bases[t]))
        blocks[name] = out
    return {"steps": steps, "taus": list(taus), "blocks": blocks}


@dataclass(frozen=True)
class Settledness:
    """How settled one block's ranking is at ``step`` relative to the end of training:
    Kendall τ of the modal scores and, per τ of the rank rule (r on the final spectrum), the
    top-r overlap, as ((τ, r, overlap), ...)."""

    step: int
    block: str
    kendall: float
    topr: tuple[tuple[float, int, float], ...]


def settledness_at(report: dict, steps: tuple[int, ...]) -> tuple[Settledness, ...]:
    """The measures of ``stability_report``'s output at ``steps`` (each must be a snapshot)."""
    index = {s: i for i, s in enumerate(report["steps"])}
    missing = [s for s in steps if s not in index]
    if missing:
        raise ValueError(f"no snapshot at steps {missing} (snapshots: {report['steps']})")
    return tuple(
        Settledness(step=s, block=name, kendall=b["kendall"][index[s]],
                    topr=tuple((float(t), b["ranks"][t], b["topr_overlap"][t][index[s]])
                               for t in b["ranks"]))
        for s in steps for name, b in report["blocks"].items())


__all__ = ["as_single_system", "Settledness", "settledness_at", "modal_scores", "kendall_tau",
           "topr_overlap", "kept_subspace", "subspace_overlap", "stability_report"]
