"""What a run optimises and reports: a :class:`Task` scores one batch of a model.

``loss_fn(model, x, y) -> (loss, score)``: ``loss`` is the scalar (mean) loss that is
back-propagated; ``score`` is the batch's metric *summed* over its ``y.numel()`` targets (the
number of correct predictions for the built-in tasks), so the trainer reports
``Σ score / Σ y.numel()`` — accuracy for the built-ins, whatever higher-is-better number a
custom task returns. The model's output may be a tensor or anything ``primary_output`` reads
(a Hugging Face ``ModelOutput``: its ``logits``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..compiler.precision import primary_output
from ..errors import SSMCompileError

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, "Tensor | float"]]


def cross_entropy_score(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of logits (..., V) against integer targets (...) and the number of
    argmax hits: classification (B,) and next-token (B, L) targets alike."""
    logits = primary_output(model(x))
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss, (logits.detach().argmax(-1) == y).sum()


@dataclass(frozen=True)
class Task:
    """``loss_fn`` (see the module docstring) and a ``name`` recorded with the run."""

    loss_fn: LossFn
    name: str = "custom"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        """``(loss, summed score)`` of one batch (divide by ``y.numel()`` for its mean)."""
        loss, score = self.loss_fn(model, x, y)
        return loss, float(score)


CLASSIFY = Task(cross_entropy_score, "classify")
LANGUAGE_MODEL = Task(cross_entropy_score, "lm")
TASKS = {"classify": CLASSIFY, "lm": LANGUAGE_MODEL}


def as_task(task: Task | str | LossFn | None, default: str = "classify") -> Task:
    """A Task from a Task, a built-in name (``"classify"``, ``"lm"``), a bare ``loss_fn`` or
    None (the data's own task, ``default``)."""
    if isinstance(task, Task):
        return task
    if task is None or isinstance(task, str):
        name = default if task is None else task
        if name not in TASKS:
            raise SSMCompileError(f"unknown task {name!r} (known: {', '.join(TASKS)}, or a "
                                  "loss_fn(model, x, y) -> (loss, score))")
        return TASKS[name]
    if callable(task):
        return Task(task)
    raise SSMCompileError(f"task must be a Task, a name or a loss_fn, got {type(task).__name__}")


__all__ = ["Task", "LossFn", "CLASSIFY", "LANGUAGE_MODEL", "as_task", "cross_entropy_score"]
