"""The model a config describes for a dataset, and how a model is scored on a split."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ModelSpec
from .config import TrainConfig
from .data import Split, TaskData
from .task import CLASSIFY, Task


def model_spec(cfg: TrainConfig, data: TaskData) -> ModelSpec:
    m = cfg.model
    norm = m.norm if m.norm != "auto" else ("layer" if data.task == "lm" else "batch")
    return ModelSpec(layer=m.layer, d_model=m.d_model, state_dims=m.block_state_dims,
                     d_output=data.n_classes, task=data.task, d_input=data.d_input,
                     vocab_size=data.vocab_size, dropout=m.dropout, norm=norm, r_min=m.r_min,
                     r_max=m.r_max)


def evaluate(model: nn.Module, split: Split, task: Task = CLASSIFY, batch_size: int = 256
             ) -> tuple[float, float]:
    """(mean loss, score) of ``model`` on ``split`` in eval mode, the mode restored; the score
    is the task's (accuracy for the built-in tasks), both weighted by targets per batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, score_sum, count = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x, y = split.x[i:i + batch_size].to(device), split.y[i:i + batch_size].to(device)
            loss, score = task(model, x, y)
            loss_sum += float(loss) * y.numel()
            score_sum += score
            count += y.numel()
    model.train(was_training)
    return loss_sum / count, score_sum / count


__all__ = ["model_spec", "evaluate"]
