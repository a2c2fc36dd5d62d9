"""The optimizer and LR schedule of a run, and how they survive a model swap.

Groups: group 0 holds every parameter outside the matched SSM blocks (AdamW with weight decay);
group 1 holds the parameters inside them (lr × ``ssm_lr_factor``, no weight decay). The LR
follows ``LambdaLR`` on the global step: linear warm-up, then cosine.

After a reduction the model is swapped for the pipeline's output, and the optimizer is edited
IN PLACE (never rebuilt, never given new groups: schedulers hold the optimizer and its group
count, and LambdaLR / OneCycleLR raise, LinearLR silently mis-sets the LR, when groups change):

- A parameter whose name, shape and bits the pipeline left unchanged is *kept*: the new model
  is re-tied to the old ``Parameter`` object, so its AdamW state (moments and per-parameter step)
  continues bit-exactly and references held elsewhere stay valid.
- Every other parameter (the reduced blocks' ν, θ, γ, B, C, …) is *reset*: its old state is
  dropped and AdamW starts it fresh (zero moments, per-parameter step 0).

Why reset and not carry the moments through the state transform: a reduced mode is a mixture
of old modes (balanced truncation, then re-diagonalisation), so slicing old moments by index
pairs unrelated coordinates; mapping the first moment through T/Tinv is linear only in (λ, B, C),
not in the stored ν_log/θ_log/γ_log/B/γ coordinates; and the second moment is a per-coordinate
average of squares, which no linear map transforms. Why the per-parameter step restarts at 0:
AdamW's bias correction divides the moments by 1 − β^t; with zeroed moments and a kept large t,
k steps after the event the update is ≈ (1 − β₁^k)/√(1 − β₂^k) times a normal one (β = 0.9,
0.999: 3.2× at k = 1, 6.5× at k = 10, 3.2× at k = 100) — an LR spike on exactly the parameters
that were just rewritten. The *global* step — what the LR schedule reads — is kept:
``scheduler.last_epoch`` and every group's lr are untouched by a swap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .config import OptimConfig

SSM_GROUP = 1


def in_blocks(name: str, blocks: Iterable[str]) -> bool:
    """Whether parameter ``name`` lives inside one of the modules named in ``blocks``."""
    return any(b == "" or name == b or name.startswith(b + ".") for b in blocks)


def param_groups(model: nn.Module, blocks: Iterable[str], cfg: OptimConfig) -> list[dict]:
    """[other parameters, SSM-block parameters] in ``named_parameters`` order."""
    blocks = tuple(blocks)
    other, ssm = [], []
    for name, p in model.named_parameters():
        (ssm if in_blocks(name, blocks) else other).append(p)
    return [
        {"params": other, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": ssm, "lr": cfg.lr * cfg.ssm_lr_factor, "weight_decay": 0.0},
    ]


def assign_groups(optimizer: Optimizer, model: nn.Module, blocks: Iterable[str]) -> None:
    """Point the two groups of ``make_optimizer`` at ``model``'s parameters (hyper-parameters
    untouched; the caller sets the state) — used to roll back to a snapshot model."""
    blocks = tuple(blocks)
    other = [p for n, p in model.named_parameters() if not in_blocks(n, blocks)]
    ssm = [p for n, p in model.named_parameters() if in_blocks(n, blocks)]
    optimizer.param_groups[0]["params"], optimizer.param_groups[SSM_GROUP]["params"] = other, ssm


def make_optimizer(model: nn.Module, blocks: Iterable[str], cfg: OptimConfig) -> AdamW:
    """AdamW over the two groups."""
    return AdamW(param_groups(model, blocks, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def warmup_cosine(step: int, total: int, warmup_fraction: float, min_fraction: float) -> float:
    """LR multiplier at global ``step`` (0-based): (step+1)/w for step < w = round(frac·total),
    then cosine from 1 down to ``min_fraction`` at ``total``."""
    warmup = round(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """The LambdaLR multiplier as a named object (its settings show up in a debugger)."""

    def __init__(self, total: int, warmup_fraction: float, min_fraction: float) -> None:
        self.total, self.warmup_fraction, self.min_fraction = total, warmup_fraction, min_fraction

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total, self.warmup_fraction, self.min_fraction)


def make_lr_schedule(optimizer: Optimizer, total_steps: int, cfg: OptimConfig) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(total_steps, cfg.warmup_fraction, cfg.min_lr_fraction))


@dataclass(frozen=True)
class SwapSummary:
    """Which parameters kept their object and optimizer state, and which start fresh."""

    kept: tuple[str, ...]
    reset: tuple[str, ...]


def _unchanged(old: torch.Tensor, new: torch.Tensor) -> bool:
    return old.shape == new.shape and old.dtype == new.dtype and torch.equal(old, new)


def _group_for(name: str, where: dict[str, int]) -> int | None:
    """The group of the same-named old parameter, else of the old parameter sharing the
    longest module prefix (a reduced block whose layer renamed its parameters)."""
    if name in where:
        return where[name]
    parts = name.split(".")[:-1]
    while parts:
        prefix = ".".join(parts) + "."
        hits = [g for n, g in where.items() if n.startswith(prefix)]
        if hits:
            return hits[0]
        parts.pop()
    return None


def swap_parameters(optimizer: Optimizer, old_model: nn.Module, new_model: nn.Module
                    ) -> SwapSummary:
    """Move ``optimizer`` from ``old_model``'s parameters to ``new_model``'s, in place.

    ``new_model`` is re-tied to the old Parameter objects of kept parameters (see the module
    docstring); ``old_model`` is not modified. Group count, hyper-parameters (lr, initial_lr,
    weight decay) and every kept parameter's state are untouched; a parameter the optimizer did
    not hold stays out of it. Parameters in the optimizer that belong to neither model (a
    user's extras) stay in their group, after the model's ones.
    """
    old_named = dict(old_model.named_parameters(remove_duplicate=False))
    old_name_of = {id(p): n for n, p in old_named.items()}
    where = {}
    extras: dict[int, list[nn.Parameter]] = {}
    for g, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            name = old_name_of.get(id(p))
            if name is None:
                extras.setdefault(g, []).append(p)
            else:
                where[name] = g
    kept, reset = [], []
    for name, p in list(new_model.named_parameters(remove_duplicate=False)):
        old = old_named.get(name)
        if old is not None and _unchanged(old.detach(), p.detach()):
            module_name, _, leaf = name.rpartition(".")
            new_model.get_submodule(module_name)._parameters[leaf] = old
            kept.append(name)
        else:
            reset.append(name)
    new_ids = {id(p) for p in new_model.parameters()}
    for p in list(optimizer.state):
        if id(p) in old_name_of and id(p) not in new_ids:
            del optimizer.state[p]
    lists: list[list[nn.Parameter]] = [[] for _ in optimizer.param_groups]
    for name, p in new_model.named_parameters():
        g = _group_for(name, where)
        if g is not None:
            lists[g].append(p)
    for g, group in enumerate(optimizer.param_groups):
        group["params"] = lists[g] + extras.get(g, [])
    return SwapSummary(tuple(kept), tuple(reset))


__all__ = ["SSM_GROUP", "in_blocks", "param_groups", "assign_groups", "make_optimizer",
           "warmup_cosine", "WarmupCosine", "make_lr_schedule", "SwapSummary", "swap_parameters"]
