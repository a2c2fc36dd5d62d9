"""The rank policy every rewrite shares: fixed rank, fixed fraction, energy τ, per-block
overrides, or one global budget across blocks; then the paper's 95 % gate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import RankError
from ..numerics import energy_rank, passes_gate
from .state import BlockAnalysis, RankDecision


@dataclass(frozen=True)
class RankPolicy:
    """Exactly one of ``rank``, ``fraction``, ``tau``, ``budget`` (or only ``overrides``).

    - ``rank``: keep r states in every block (clipped to the block's size).
    - ``fraction``: keep ⌈fraction·n⌉ states per block.
    - ``tau``: the paper's energy rule per block: smallest r with Σ_{i≤r}σ / Σσ ≥ 1 − τ
      (``squared=True`` uses σ²).
    - ``budget``: keep this fraction of all states across blocks, chosen by one threshold on
      HSVs normalised per block (σ / Σσ), as LAST compares layers.
    - ``overrides``: block name → rank, applied last.
    - ``gate``: a block is reduced only if r < gate·n (the paper's 0.95), unless overridden.
    - ``uniform``: every block of the same state size gets the largest rank any of them asks
      for (formats such as a Hugging Face config hold one state size for all layers).
    """

    rank: int | None = None
    fraction: float | None = None
    tau: float | None = None
    budget: float | None = None
    squared: bool = False
    overrides: tuple[tuple[str, int], ...] = ()
    gate: float = 0.95
    uniform: bool = False

    def __post_init__(self) -> None:
        # A mapping is accepted for convenience; stored as sorted pairs so the policy stays
        # hashable and its pipeline spelling is canonical.
        pairs = (self.overrides.items() if isinstance(self.overrides, Mapping)
                 else self.overrides)
        try:
            pairs = tuple(sorted((str(k), int(v)) for k, v in pairs))
        except (TypeError, ValueError):
            raise RankError("per-block ranks must be name → integer pairs") from None
        object.__setattr__(self, "overrides", pairs)
        chosen = [k for k in ("rank", "fraction", "tau", "budget") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise RankError(f"choose one of rank, fraction, tau, budget (got {', '.join(chosen)})")
        if not chosen and not self.overrides:
            raise RankError("a rank policy needs rank, fraction, tau, budget or per-block ranks")
        if self.rank is not None and self.rank < 1:
            raise RankError(f"rank must be >= 1, got {self.rank}")
        for key in ("fraction", "tau", "budget"):
            v = getattr(self, key)
            if v is None:
                continue
            if key == "tau" and not 0.0 < v < 1.0:
                raise RankError(f"tau must be in (0, 1), got {v:g}")
            if key != "tau" and not 0.0 < v <= 1.0:
                raise RankError(f"{key} must be in (0, 1], got {v:g}")
        for name, r in self.overrides:
            if r < 1:
                raise RankError(f"block {name}={r}: rank must be >= 1")
        if not 0.0 < self.gate <= 1.0:
            raise RankError(f"gate must be in (0, 1], got {self.gate}")

    @property
    def block_ranks(self) -> dict[str, int]:
        return dict(self.overrides)

    def require_reduction(self, dims: Mapping[str, int]) -> None:
        """RankError unless every fixed rank is below its block's state dim (for tools that
        must shrink every block they are told to, such as ``ssmcompile reduce``)."""
        per_block = self.block_ranks
        for name, r in per_block.items():
            if name not in dims:
                raise RankError(f"no block named {name!r} (blocks: {', '.join(dims)})")
            if not r < dims[name]:
                raise RankError(f"block {name}={r}: rank must be in 1..{dims[name] - 1} "
                                f"(block has n={dims[name]})")
        if self.rank is not None:
            for name, n in dims.items():
                if name not in per_block and self.rank >= n:
                    raise RankError(f"rank {self.rank} is not below the state dim of block "
                                    f"{name} (n={n})")

    def decide(self, analyses: list[BlockAnalysis]) -> dict[str, RankDecision]:
        """One decision per analysed block (reduce or keep, with the reason)."""
        overrides = self.block_ranks
        unknown = set(overrides) - {a.name for a in analyses}
        if unknown:
            raise RankError(f"no block named {sorted(unknown)[0]!r}; blocks: "
                            + ", ".join(a.name for a in analyses))
        budget_ranks = _budget_ranks(analyses, self.budget) if self.budget is not None else {}
        decisions = {}
        for a in analyses:
            n = a.state_dim
            if a.name in overrides:
                r, why = overrides[a.name], "per-block rank"
                if r > n:
                    raise RankError(f"rank {r} for block {a.name!r} exceeds its state dim {n}")
                decisions[a.name] = RankDecision(a.name, n, r, r < n, why)
                continue
            if self.rank is not None:
                r, why = min(self.rank, n), f"rank={self.rank}"
            elif self.fraction is not None:
                r, why = max(1, math.ceil(self.fraction * n)), f"fraction={self.fraction}"
            elif self.tau is not None:
                r = energy_rank(a.hsv, self.tau, squared=self.squared)
                why = f"tau={self.tau}"
            elif self.budget is not None:
                r, why = budget_ranks[a.name], f"budget={self.budget}"
            else:
                decisions[a.name] = RankDecision(a.name, n, n, False, "no rule for this block")
                continue
            if r >= n:
                decisions[a.name] = RankDecision(a.name, n, n, False, f"{why}: keeps all states")
            elif not passes_gate(r, n, self.gate):
                decisions[a.name] = RankDecision(
                    a.name, n, n, False, f"{why}: r={r} is not below {self.gate:.0%} of n={n}")
            else:
                decisions[a.name] = RankDecision(a.name, n, r, True, why)
        return _uniform(decisions) if self.uniform else decisions


def _uniform(decisions: dict[str, RankDecision]) -> dict[str, RankDecision]:
    """Blocks that share a state size get one rank: the largest any of them needs (a block
    the policy keeps whole keeps the whole group whole)."""
    out = dict(decisions)
    for n in {d.state_dim for d in decisions.values()}:
        group = [d for d in decisions.values() if d.state_dim == n]
        r = max(d.rank for d in group)
        for d in group:
            reason = d.reason if d.rank == r else f"{d.reason}; raised to {r} (uniform)"
            out[d.name] = RankDecision(d.name, n, r, r < n, reason if r < n else
                                       f"{d.reason}; kept whole (uniform)")
    return out


def _budget_ranks(analyses: list[BlockAnalysis], budget: float) -> dict[str, int]:
    """Keep ⌈budget·Σn⌉ states in all: the largest normalised σ across blocks win.

    Multi-SISO blocks (a batch of systems sharing one rank) score mode i by its largest
    normalised σ over the batch, since a uniform rank must serve the neediest channel.
    """
    scores = []
    for a in analyses:
        h = a.hsv.double()
        h = h / h.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        if h.ndim > 1:
            h = h.reshape(-1, h.shape[-1]).amax(dim=0)
        scores += [(float(s), a.name) for s in h]
    total = sum(a.state_dim for a in analyses)
    keep = max(len(analyses), math.ceil(budget * total))
    ranks = {a.name: 1 for a in analyses}  # every block keeps at least one state
    remaining = keep - len(analyses)
    first_taken = set()
    for _, name in sorted(scores, key=lambda t: -t[0]):
        if name not in first_taken:
            first_taken.add(name)  # its leading mode is already counted in the minimum of 1
            continue
        if remaining <= 0:
            break
        ranks[name] += 1
        remaining -= 1
    return ranks
