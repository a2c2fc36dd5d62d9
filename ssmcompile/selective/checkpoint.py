"""The ``"selective-lm"`` checkpoint builder: :class:`SelectiveLM` rebuilt from its LMConfig.

The spec stored in a checkpoint is ``LMConfig.to_dict()`` (canonical: ``layer_d_states``
spelled out); a reduction event on block ``layers.{i}.mixer`` sets that layer's state
dimension. Importing :mod:`ssmcompile.selective` registers it; ``ssmcompile.io`` imports this
package by itself (a fixed allow-list entry) when a file names ``"selective-lm"``.
"""

from __future__ import annotations

import re
from typing import Any

from ..io.builders import ModelBuilder, register_builder
from ..layers.spec import SpecError
from .lm import LMConfig, SelectiveLM

BUILDER_NAME = "selective-lm"

_BLOCK_NAME = re.compile(r"layers\.(\d+)\.mixer")

Spec = dict[str, Any]


def _config(spec: Spec) -> LMConfig:
    return LMConfig.from_dict(spec)


def _state_dims(spec: Spec) -> dict[str, int]:
    return {f"layers.{i}.mixer": n for i, n in enumerate(_config(spec).state_dims)}


def _resize(spec: Spec, block: str, r: int) -> Spec:
    cfg = _config(spec)
    m = _BLOCK_NAME.fullmatch(block)
    if m is None or int(m.group(1)) >= cfg.n_layers:
        raise SpecError(f"no block {block!r} in a {cfg.n_layers}-layer SelectiveLM")
    dims = list(cfg.state_dims)
    dims[int(m.group(1))] = r
    return cfg.with_state_dims(tuple(dims)).to_dict()


SELECTIVE_LM_BUILDER = ModelBuilder(
    build=lambda spec: SelectiveLM(_config(spec)),
    resize=_resize,
    state_dims=_state_dims,
    canonical=lambda spec: _config(spec).canonical().to_dict(),
)


def register_selective_builder() -> None:
    """Allow checkpoints to name ``"selective-lm"`` (done on import of the package)."""
    register_builder(BUILDER_NAME, SELECTIVE_LM_BUILDER)


__all__ = ["BUILDER_NAME", "SELECTIVE_LM_BUILDER", "register_selective_builder"]
