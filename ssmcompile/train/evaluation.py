"""The model a config describes for a dataset, and how a model is scored on a split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ModelSpec
from .config import TrainConfig
from .data import Split, TaskData


def model_spec(cfg: TrainConfig, data: TaskData) -> ModelSpec:
    m = cfg.model
    norm = m.norm if m.norm != "auto" else ("layer" if data.task == "lm" else "batch")
    return ModelSpec(layer=m.layer, d_model=m.d_model, state_dims=(m.state_dim,) * m.n_blocks,
                     d_output=data.n_classes, task=data.task, d_input=data.d_input,
                     vocab_size=data.vocab_size, dropout=m.dropout, norm=norm, r_min=m.r_min,
                     r_max=m.r_max)


def evaluate(model: nn.Module, split: Split, batch_size: int = 256) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``split`` in eval mode; the mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x, y = split.x[i:i + batch_size].to(device), split.y[i:i + batch_size].to(device)
            out = model(x)
            loss_sum += float(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                              reduction="sum"))
            correct += int((out.argmax(-1) == y).sum())
            count += y.numel()
    model.train(was_training)
    return loss_sum / count, correct / count


__all__ = ["model_spec", "evaluate"]
