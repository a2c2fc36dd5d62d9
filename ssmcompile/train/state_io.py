"""The trainer-state file: everything besides the weights that a bit-exact resume needs.

One safetensors file (no pickle): tensors for the optimizer state (keyed by *parameter name*,
``optim/<param>/<key>``), the torch CPU (and CUDA) generator state as uint8, numpy's Mersenne
state and the data permutation; JSON metadata for the rest — global step, LR-scheduler state,
optimizer group hyper-parameters and membership (by name), Python ``random`` state, data
position, metrics so far with the (loss, score) of the steps since the last train record,
the run flags and pending pragmatic event (``run_state``), thread count, and the checkpoint
id that pairs this file with its weights file. Under DDP each rank > 0 writes its own RNG
file (``save_rank_rng``), paired by the same id: ranks draw their own dropout streams, so
rank 0's RNG state alone cannot resume them. Loading checks names and
shapes against the live model before touching the optimizer (``Optimizer.load_state_dict``
does not, and fails only at ``step()``).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..errors import CheckpointError
from ..io import load_tensors, save_tensors_atomic
from ..io.tensorfile import read_metadata
from .records import MetricRecord, records_from_json, records_to_json
from .run_state import PendingEvent, RunFlags

STATE_FORMAT = "ssmcompile-trainer-state"
STATE_VERSION = 2  # 2: typed flags, pending event apart, per-rank RNG files
RANK_RNG_FORMAT = "ssmcompile-rank-rng"
OptimState = dict[str, dict[str, Any]]  # parameter name → AdamW state entries


def optimizer_state_by_name(optimizer: Optimizer, model: nn.Module) -> OptimState:
    """Detached clones of ``optimizer``'s per-parameter state, keyed by parameter name."""
    out: OptimState = {}
    for name, p in model.named_parameters():
        entry = optimizer.state.get(p)
        if entry:
            out[name] = {k: v.detach().clone() if isinstance(v, Tensor) else v
                         for k, v in entry.items()}
    return out


def restore_optimizer_state(optimizer: Optimizer, model: nn.Module, state: OptimState) -> None:
    """Replace ``optimizer.state`` with ``state`` mapped onto ``model``'s parameters by name;
    shapes are checked first (CheckpointError on a mismatch, nothing changed then)."""
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise CheckpointError(f"optimizer state for unknown parameter {unknown[0]!r}")
    for name, entry in state.items():
        for key, value in entry.items():
            if key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer") and (
                value.shape != params[name].shape
            ):
                raise CheckpointError(f"optimizer state {name}.{key} has shape "
                                      f"{tuple(value.shape)}, parameter has "
                                      f"{tuple(params[name].shape)}")
    optimizer.state.clear()
    for name, entry in state.items():
        p = params[name]
        optimizer.state[p] = {k: v.to(p.device) if isinstance(v, Tensor) and k != "step" else v
                              for k, v in entry.items()}


@dataclass(frozen=True)
class GroupLayout:
    """One optimizer param group: its parameters by name and its hyper-parameters (the
    optimizer's own keys: lr, initial_lr, betas, weight_decay, …; JSON-able)."""

    params: tuple[str, ...]
    options: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.options, "params": list(self.params)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupLayout:
        return cls(tuple(data["params"]), {k: v for k, v in data.items() if k != "params"})


def group_layout(optimizer: Optimizer, model: nn.Module) -> list[GroupLayout]:
    """Each group's parameters by name and hyper-parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [GroupLayout(tuple(names.get(id(p), "?") for p in group["params"]),
                        {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in group.items() if k != "params"})
            for group in optimizer.param_groups]


def restore_group_layout(optimizer: Optimizer, model: nn.Module,
                         layout: list[GroupLayout]) -> None:
    """Check group membership by name and restore hyper-parameters (lr, initial_lr, …)."""
    current = group_layout(optimizer, model)
    if len(layout) != len(current):
        raise CheckpointError(f"saved optimizer has {len(layout)} param groups, "
                              f"this one {len(current)}")
    for g, (saved, now) in enumerate(zip(layout, current, strict=True)):
        if saved.params != now.params:
            raise CheckpointError(f"optimizer group {g} holds different parameters than saved")
    for group, saved in zip(optimizer.param_groups, layout, strict=True):
        for key, value in saved.options.items():
            group[key] = tuple(value) if isinstance(group.get(key), tuple) else value


def capture_rng() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Global RNG states: torch CPU (and CUDA) as uint8 tensors, numpy and Python in JSON."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def seed_run(seed: int) -> None:
    """Seed torch, numpy and Python ``random`` for a fresh run."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def restore_rng(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos,
                         has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


@dataclass
class TrainerState:
    """What ``save_trainer_state`` writes and ``load_trainer_state`` returns.

    ``optimizer``: per-parameter state by name; ``groups``: ``group_layout``; ``scheduler``:
    the LR scheduler's ``state_dict`` (JSON-able); ``data``: ``{"epoch", "position"}`` with
    ``perm`` the epoch's permutation; ``rng``: (tensors, meta) from ``capture_rng``;
    ``flags``: the loop's flags; ``pending``: an event pragmatic mode has not judged yet;
    ``window``: (loss, score) of the steps since the last train record, so that the first
    record after a resume averages the same steps as an uninterrupted run's;
    ``checkpoint_id`` pairs it with weights.
    """

    step: int
    checkpoint_id: str
    optimizer: OptimState
    groups: list[GroupLayout]
    scheduler: dict[str, Any]
    data: dict[str, int]
    perm: Tensor
    rng: tuple[dict[str, Tensor], dict[str, Any]]
    metrics: list[MetricRecord] = field(default_factory=list)
    flags: RunFlags = field(default_factory=lambda: RunFlags(run_id=""))
    pending: PendingEvent | None = None
    threads: int = 1
    window: list[tuple[float, float]] = field(default_factory=list)


def save_trainer_state(path: str | os.PathLike[str], state: TrainerState):
    """Write ``state`` atomically (safetensors + JSON metadata)."""
    tensors: dict[str, Tensor] = {"data/perm": state.perm}
    scalars: dict[str, dict[str, Any]] = {}
    for name, entry in state.optimizer.items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{name}/{key}"] = value
            else:
                scalars.setdefault(name, {})[key] = value
    rng_tensors, rng_meta = state.rng
    tensors.update(rng_tensors)
    body = {
        "step": state.step, "checkpoint_id": state.checkpoint_id,
        "groups": [g.to_json() for g in state.groups],
        "optimizer_scalars": scalars, "scheduler": state.scheduler, "data": state.data,
        "rng": rng_meta, "metrics": records_to_json(state.metrics),
        "flags": state.flags.to_dict(),
        "pending": None if state.pending is None else state.pending.to_dict(),
        "threads": state.threads, "window": [[_finite_or_text(v) for v in pair]
                                             for pair in state.window],
    }
    meta = {"format": STATE_FORMAT, "version": str(STATE_VERSION),
            "state": json.dumps(body, allow_nan=False)}
    return save_tensors_atomic(path, tensors, meta)


def _finite_or_text(value: float) -> float | str:
    # JSON has no NaN/Inf; a diverging step's loss is kept as text (float() reads it back)
    return value if math.isfinite(value) else repr(value)


def load_trainer_state(path: str | os.PathLike[str]) -> TrainerState:
    tensors, meta = load_tensors(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an ssmcompile trainer-state file")
    if meta.get("version") != str(STATE_VERSION):
        raise CheckpointError(f"{path}: unsupported trainer-state version {meta.get('version')}")
    try:
        body = json.loads(meta["state"])
        optimizer: OptimState = {n: dict(v) for n, v in body["optimizer_scalars"].items()}
        for key, t in tensors.items():
            if key.startswith("optim/"):
                name, _, entry = key[len("optim/"):].rpartition("/")
                optimizer.setdefault(name, {})[entry] = t
        rng_tensors = {k: t for k, t in tensors.items() if k.startswith("rng/")}
        return TrainerState(
            step=int(body["step"]), checkpoint_id=str(body["checkpoint_id"]),
            optimizer=optimizer, groups=[GroupLayout.from_json(g) for g in body["groups"]],
            scheduler=body["scheduler"], data=body["data"], perm=tensors["data/perm"],
            rng=(rng_tensors, body["rng"]), metrics=records_from_json(body["metrics"]),
            flags=RunFlags.from_dict(body["flags"]),
            pending=PendingEvent.from_dict(body["pending"]), threads=int(body["threads"]),
            window=[(float(loss), float(score)) for loss, score in body.get("window", [])],
        )
    except (KeyError, TypeError, ValueError, CheckpointError) as err:
        raise CheckpointError(f"{path}: malformed trainer state ({err})") from None


def read_state_id(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(step, checkpoint_id)`` of a trainer-state file; only its header is read."""
    meta = read_metadata(path)
    try:
        if meta.get("format") != STATE_FORMAT:
            raise ValueError("not a trainer-state file")
        body = json.loads(meta["state"])
        return int(body["step"]), str(body["checkpoint_id"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: malformed trainer state ({err})") from None


def save_rank_rng(path: str | os.PathLike[str], checkpoint_id: str) -> None:
    """This process's RNG states (``capture_rng``), atomically, tagged with ``checkpoint_id``."""
    tensors, meta = capture_rng()
    save_tensors_atomic(path, tensors, {"format": RANK_RNG_FORMAT, "checkpoint_id": checkpoint_id,
                                        "rng": json.dumps(meta, allow_nan=False)})


def read_rank_rng_id(path: str | os.PathLike[str]) -> str | None:
    """The checkpoint id of a rank RNG file (header only), None if absent or not one."""
    try:
        meta = read_metadata(path)
    except CheckpointError:
        return None
    return meta.get("checkpoint_id") if meta.get("format") == RANK_RNG_FORMAT else None


def load_rank_rng(path: str | os.PathLike[str], checkpoint_id: str
                  ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, meta)`` for ``restore_rng``; CheckpointError unless it is ``checkpoint_id``'s."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != RANK_RNG_FORMAT or meta.get("checkpoint_id") != checkpoint_id:
        raise CheckpointError(f"{path}: not the RNG file of checkpoint {checkpoint_id}")
    try:
        return tensors, json.loads(meta["rng"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: malformed RNG file ({err})") from None


__all__ = ["TrainerState", "save_rank_rng", "load_rank_rng", "read_rank_rng_id",
           "save_trainer_state", "load_trainer_state", "read_state_id",
           "optimizer_state_by_name", "restore_optimizer_state", "group_layout",
           "restore_group_layout", "GroupLayout", "capture_rng", "restore_rng", "seed_run",
           "OptimState"]
