"""What a run trains: the model the config describes, or the user's own model.

A config-built model (``SSMModel`` / ``SelectiveLM``) is checkpointed under its allow-listed
builder with its full spec. A user's model (a factory, or an instance that is deep-copied and
never changed) is checkpointed under ``"user-model"`` (or a builder the user registered with
``ssmcompile.io.module_builder``) with the block-dims spec ``{"blocks": {name: n}}``, and is
rebuilt from a checkpoint by replaying the history onto a fresh ``factory()``
(``load_checkpoint(path, model=factory)``). Either way the current spec is a pure function of
the initial spec and the history (``ssmcompile.io.replay``), so the loop tracks only those.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..compiler.state import Block
from ..errors import SSMCompileError
from ..io import USER_MODEL, CheckpointMeta, ReductionEvent, get_builder, load_checkpoint, replay
from ..io.builders import spec_blocks
from .build import builder_name, initial_model
from .config import TrainConfig
from .data import TaskData

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class RunModel:
    """``factory()`` builds the initial model; checkpoints name ``builder``; ``user``: rebuilt
    onto ``factory()`` rather than by the builder."""

    factory: ModelFactory
    builder: str
    user: bool

    def initial_spec(self, model: nn.Module, blocks: Sequence[Block]) -> dict[str, Any]:
        if not self.user:
            return model.spec.to_dict()
        return {"blocks": {b.name: int(b.adapter.state_dim(model.get_submodule(b.name)))
                           for b in blocks}}

    def spec(self, initial_spec: dict[str, Any], history: Sequence[ReductionEvent]
             ) -> dict[str, Any]:
        """The architecture after ``history`` (what the checkpoint's ``spec`` holds)."""
        return replay(get_builder(self.builder), initial_spec, history)

    def dims(self, spec: dict[str, Any]) -> tuple[int, ...]:
        """Every block's state dimension under ``spec``, in model order."""
        return tuple(get_builder(self.builder).state_dims(spec).values())

    def load(self, path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
        return load_checkpoint(path, model=self.factory) if self.user else load_checkpoint(path)


def run_model(cfg: TrainConfig, data: TaskData, model: nn.Module | ModelFactory | None = None,
              builder: str | None = None) -> RunModel:
    """The RunModel of a run: ``cfg.model`` on ``data`` when ``model`` is None, else the user's
    model (``builder``: a registered block-dims builder name, default ``"user-model"``)."""
    if model is None:
        if builder is not None:
            raise SSMCompileError("builder= names the checkpoint builder of a user model=")
        return RunModel(lambda: initial_model(cfg, data), builder_name(cfg), user=False)
    if isinstance(model, nn.Module):
        template = copy.deepcopy(model)  # later changes to the caller's model do not leak in
        factory: ModelFactory = lambda: copy.deepcopy(template)  # noqa: E731
    elif callable(model):
        factory = model
    else:
        raise SSMCompileError(f"model= needs an nn.Module or a zero-argument factory, got "
                              f"{type(model).__name__}")
    name = builder or USER_MODEL
    if get_builder(name).state_dims is not spec_blocks:
        raise SSMCompileError(f"builder {name!r} does not describe models by block dims: "
                              "register one made by ssmcompile.io.module_builder")
    return RunModel(factory, name, user=True)


__all__ = ["RunModel", "ModelFactory", "run_model"]
