"""What a training run starts from: its initial model, checkpoint builder, config record and
progress bar (the parts of a run that depend only on its config)."""

from __future__ import annotations

import json
import sys

from torch import nn

from ..errors import SSMCompileError
from ..layers import build_model
from .config import SELECTIVE_LAYERS, TrainConfig
from .data import TaskData
from .evaluation import model_spec


def builder_name(cfg: TrainConfig) -> str:
    """The checkpoint builder of the model ``cfg`` trains."""
    return "selective-lm" if cfg.model.layer in SELECTIVE_LAYERS else "ssm-model"


def initial_model(cfg: TrainConfig, data: TaskData) -> nn.Module:
    """A freshly initialised model for ``cfg`` on ``data`` (an ``SSMModel``, or a
    ``SelectiveLM`` for a selective layer); its ``spec.to_dict()`` is the initial spec."""
    if cfg.model.layer not in SELECTIVE_LAYERS:
        return build_model(model_spec(cfg, data))
    from ..selective import LMConfig, SelectiveLM  # registers the "selective-lm" builder

    if data.task != "lm" or data.vocab_size is None:
        raise SSMCompileError(f"model.layer={cfg.model.layer!r} needs a text (lm) dataset")
    m = cfg.model
    return SelectiveLM(LMConfig(data.vocab_size, m.d_model, m.n_blocks, m.layer, m.state_dim,
                                layer_d_states=m.state_dims))


def config_json(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def progress_bar(cfg: TrainConfig, initial: int, is_main: bool):
    from tqdm import tqdm

    # disable=None: shown on a terminal only, so logs and CI output stay readable
    return tqdm(total=cfg.steps, initial=initial, file=sys.stderr, unit="step",
                disable=None if cfg.progress and is_main else True, dynamic_ncols=True,
                leave=False)


__all__ = ["builder_name", "initial_model", "config_json", "progress_bar"]
