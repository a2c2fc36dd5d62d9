"""Rebuild a reduced checkpoint on the user's own model: replay its history through adapters.

A checkpoint of a model ssmcompile cannot build itself stores no code, only weights and the
reduction history (block name, n → r). ``replay_onto`` takes a fresh instance of the user's
architecture (a copy of it: the user's module is never touched), checks that its blocks have
the state dimensions the checkpoint started from, and resizes each block the history names
through that block's registered adapter. Only the *shapes* of the result matter: the weights
are loaded strictly afterwards, so a resized block's values are placeholders.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..adapters import adapter_for
from ..errors import CheckpointError, SSMCompileError
from ..numerics.system import LTISystem, TruncationResult
from .builders import ModelBuilder, block_dims_spec, call_builder, spec_blocks
from .meta import ReductionEvent
from .tensorfile import one_line

ModelSource = nn.Module | Callable[[], nn.Module]


def fresh_instance(model: ModelSource) -> nn.Module:
    """A model to rebuild into: ``model()`` for a factory, else a deep copy of ``model``."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if callable(model):
        built = call_builder("the model factory failed", model)
        if not isinstance(built, nn.Module):
            raise CheckpointError(f"the model factory returned a {type(built).__name__}, "
                                  "not an nn.Module")
        return built
    raise CheckpointError(f"model= needs an nn.Module or a factory, got {type(model).__name__}")


def _block(model: nn.Module, name: str, where: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise CheckpointError(f"{where}: the model has no block {name!r}") from None
    return module


def _adapter(module: nn.Module, name: str, where: str):
    adapter = adapter_for(module)
    if adapter is None:
        raise CheckpointError(f"{where}: block {name!r} is a {type(module).__name__}, which has "
                              "no registered adapter (ssmcompile.register_block) to resize it")
    return adapter


def block_dims(model: nn.Module, names: Sequence[str], where: str = "model") -> dict[str, int]:
    """State dimension of each named block, read through its adapter."""
    dims = {}
    for name in names:
        module = _block(model, name, where)
        dims[name] = int(_adapter(module, name, where).state_dim(module))
    return dims


def _placeholder_truncation(n: int, r: int, batch: tuple[int, ...] = ()) -> TruncationResult:
    """Keeps states 0..r-1 of n: T = I[:, :r], Tinv = I[:r, :], σ descending (batch-free)."""
    eye = torch.eye(n, dtype=torch.float64)
    hsv = torch.linspace(1.0, 0.5, n, dtype=torch.float64).expand(*batch, n)
    A = torch.zeros(*batch, r, dtype=torch.complex128)
    system = LTISystem(A, torch.zeros(*batch, r, 1, dtype=torch.complex128),
                       torch.zeros(*batch, 1, r, dtype=torch.complex128))
    return TruncationResult(system, hsv, r, hsv[..., r:], hsv[..., r:].sum(-1),
                            eye[:, :r], eye[:r, :])


def _leading_states(system: LTISystem, r: int) -> LTISystem:
    """States 0..r-1 of a diagonal system (still stable), or a stable dense placeholder."""
    if system.is_diagonal:
        return LTISystem(system.A[..., :r], system.B[..., :r, :], system.C[..., :r],
                         system.D)
    A = 0.5 * torch.eye(r, dtype=system.A.dtype).expand(*system.A.shape[:-2], r, r)
    return LTISystem(A, system.B[..., :r, :], system.C[..., :r], system.D)


def resize_block(module: nn.Module, r: int) -> nn.Module:
    """A new module like ``module`` holding ``r`` states (shapes right, values placeholders).

    Through the adapter's ``rebuild_from_truncation`` (calibrated, selective blocks: keep the
    first r state indices) or ``read`` → first r states → ``rebuild``. The RNG is forked: a
    rebuild during resume must not shift the run's random stream.
    """
    adapter = adapter_for(module)
    if adapter is None:
        raise CheckpointError(f"{type(module).__name__} has no registered adapter")
    n = int(adapter.state_dim(module))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        if hasattr(adapter, "rebuild_from_truncation"):
            return adapter.rebuild_from_truncation(module, _placeholder_truncation(n, r))
        return adapter.rebuild(module, _leading_states(adapter.read(module), r))


def replay_onto(model: ModelSource, initial_dims: Mapping[str, int],
                history: Sequence[ReductionEvent]) -> nn.Module:
    """A fresh instance of ``model`` whose blocks start at ``initial_dims`` and have had every
    ``history`` event applied; one-line CheckpointError naming the block that does not fit."""
    fresh = fresh_instance(model)
    have = block_dims(fresh, list(initial_dims), "checkpoint does not fit the model")
    for name, n in initial_dims.items():
        if have[name] != n:
            raise CheckpointError(f"checkpoint does not fit the model: block {name!r} has "
                                  f"n={have[name]}, the checkpoint's model started at n={n}")
    for k, event in enumerate(history):
        where = f"history event {k} (step {event.step}, block {event.block!r})"
        module = _block(fresh, event.block, where)
        n = int(_adapter(module, event.block, where).state_dim(module))
        if n != event.n:
            raise CheckpointError(f"{where}: resizes from n={event.n}, the model's block has "
                                  f"n={n}")
        try:
            fresh.set_submodule(event.block, resize_block(module, event.r))
        except SSMCompileError as err:
            raise CheckpointError(f"{where}: cannot resize the block: {one_line(err)}") from None
    return fresh


def module_builder(factory: Callable[[], nn.Module]) -> ModelBuilder:
    """A checkpoint builder for your own architecture: ``factory()`` builds it at full size,
    the spec is ``{"blocks": {block name: state dim}}`` and ``build`` resizes the blocks to it.

    ``register_builder("my-net", module_builder(lambda: MyNet(...)))`` lets checkpoints that
    name ``"my-net"`` load with plain ``load_checkpoint(path)`` (and the trainer write them
    with ``Trainer(..., model=..., builder="my-net")``).
    """

    def build(spec: dict[str, Any]) -> nn.Module:
        dims = spec_blocks(spec)
        model = fresh_instance(factory)
        for name, n in block_dims(model, list(dims)).items():
            if n != dims[name]:
                model.set_submodule(name, resize_block(model.get_submodule(name), dims[name]))
        return model

    return block_dims_spec(build)


__all__ = ["ModelSource", "fresh_instance", "block_dims", "resize_block", "replay_onto",
           "module_builder"]
