"""Your own data for the trainer: tensors or a torch ``Dataset`` become a :class:`TaskData`.

The trainer indexes whole splits by batch indices (that is what makes its data order a pure
function of the seed and the position, hence resumable bit-exactly), so a ``Dataset`` is read
once, item by item, and stacked: fine for data that fits in memory, which is what this is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .data import DataError, Split, TaskData

SplitLike = Split | tuple[Tensor, Tensor] | Sequence[tuple[Any, Any]]


def as_split(data: SplitLike, what: str) -> Split:
    """A Split from a Split, an ``(x, y)`` pair of tensors (first dimension N) or a map-style
    ``Dataset`` / sequence of ``(x, y)`` items (stacked)."""
    if isinstance(data, Split):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
    else:
        try:
            items = [data[i] for i in range(len(data))]
            x = torch.stack([torch.as_tensor(item[0]) for item in items])
            y = torch.stack([torch.as_tensor(item[1]) for item in items])
        except (TypeError, IndexError, RuntimeError, ValueError) as err:
            raise DataError(f"{what}: expected (x, y) tensors or a Dataset of (x, y) items "
                            f"({err})") from None
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"{what}: x has {x.shape[0]} rows, y has {y.shape[0]} (need equal, > 0)")
    return Split(x, y)


def user_task_data(train: SplitLike, val: SplitLike | None = None,
                   test: SplitLike | None = None, *, task: str = "custom",
                   name: str = "user") -> TaskData:
    """``TaskData`` for the trainer from your splits; ``val`` defaults to ``train`` (evaluations,
    pragmatic mode and the best checkpoint then score on training data), ``test`` to none."""
    tr = as_split(train, "train")
    va = as_split(val, "val") if val is not None else tr
    te = as_split(test, "test") if test is not None else None
    labels = tr.y if not tr.y.is_floating_point() else None
    n_classes = int(labels.max()) + 1 if labels is not None and labels.numel() else 0
    return TaskData(name, task, tr, va, te, n_classes=n_classes)


__all__ = ["as_split", "user_task_data", "SplitLike"]
