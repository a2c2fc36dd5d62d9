"""A model the trainer knows nothing about, and its data: shared by the user-model, kill/resume
and DDP tests (imported by their subprocess drivers too, so it must stay importable alone)."""

from __future__ import annotations

import torch
from torch import nn

from ssmcompile.layers import LRU
from ssmcompile.train.data import load_digits_task
from ssmcompile.train.user_data import user_task_data

BLOCKS = ("mixers.0", "mixers.1")


class LRUMixer(LRU):
    """The user's subclass of an ssmcompile layer (its adapter applies to subclasses)."""

    def forward(self, x):
        return x + torch.nn.functional.gelu(super().forward(x))


class PixelNet(nn.Module):
    """(batch, L, 1) pixels → (batch, 10) logits: encoder, two residual LRU mixers, dropout,
    mean-pool, head."""

    def __init__(self, width: int = 12, state_dims: tuple[int, ...] = (20, 16)):
        super().__init__()
        self.encode = nn.Linear(1, width)
        self.mixers = nn.ModuleList(LRUMixer(width, n) for n in state_dims)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = self.encode(x)
        for mixer in self.mixers:
            h = self.drop(mixer(h))
        return self.head(h.mean(1))


def make_model() -> PixelNet:
    return PixelNet()


def digits_data(n_train: int = 256, n_val: int = 128):
    """Digits as plain tensors, handed to the trainer as the user's own splits."""
    task = load_digits_task()
    return user_task_data((task.train.x[:n_train], task.train.y[:n_train]),
                          (task.val.x[:n_val], task.val.y[:n_val]),
                          (task.test.x[:n_val], task.test.y[:n_val]))


def trainer_options() -> dict:
    """Trainer keyword arguments of the user-model runs (for the subprocess drivers)."""
    return {"model": make_model, "data": digits_data(), "task": "classify"}
