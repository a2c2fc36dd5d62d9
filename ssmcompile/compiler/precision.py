"""Running users' modules at a chosen precision, and reading their outputs.

``nn.Module.double()`` leaves complex parameters complex64, so a float64 copy of a module with
complex parameters fails at its first matmul; :func:`at_precision` moves each floating tensor to
the float dtype and each complex tensor to the complex dtype of the same family. Some modules
still cannot run in float64 (``u.to(torch.cfloat)`` inside ``forward``): :func:`run_checked`
tries float64 first and falls back to the module's own dtype, reporting which one it used, so
checks can widen their tolerance to that precision.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from ..errors import MatchError

_COMPLEX_OF = {torch.float16: torch.complex32, torch.bfloat16: torch.complex64,
               torch.float32: torch.complex64, torch.float64: torch.complex128}
T = TypeVar("T")


def at_precision(module: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """An eval-mode deep copy of ``module`` with float tensors in ``dtype`` and complex tensors
    in the complex dtype of the same precision (float64 → complex128)."""
    replica = copy.deepcopy(module).eval()
    cdtype = _COMPLEX_OF[dtype]

    def cast(t: torch.Tensor) -> torch.Tensor:
        if t.is_complex():
            return t.to(cdtype)
        return t.to(dtype) if t.is_floating_point() else t

    return replica._apply(cast)


def native_dtype(module: nn.Module) -> torch.dtype:
    """The real dtype of the module's first floating or complex parameter/buffer (float32 if
    it has none)."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_complex():
            return t.real.dtype if t.dtype != torch.complex32 else torch.float16
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def cast_inputs(inputs: tuple, dtype: torch.dtype) -> tuple:
    return tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                 for x in inputs)


def primary_output(out: object) -> torch.Tensor:
    """The tensor a model's output stands for: itself, ``.logits`` of a Hugging Face
    ``ModelOutput`` or any object with one, else the first tensor of a tuple, list, dict or
    dataclass (depth first). Raises MatchError when there is none."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict):
        items = list(out.values())
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [getattr(out, f.name) for f in dataclasses.fields(out)]
    elif isinstance(out, (tuple, list)):
        items = list(out)
    else:
        items = []
    for item in items:
        if item is None:
            continue
        try:
            return primary_output(item)
        except MatchError:
            continue
    raise MatchError(f"the output ({type(out).__name__}) holds no tensor")


def describe_exception(err: BaseException) -> str:
    """One line for a report: the exception type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def run_checked(fn: Callable[[torch.dtype], T], module: nn.Module) -> tuple[T, torch.dtype]:
    """``fn(float64)``; if the user's code raises there, ``fn(native dtype)``. Returns the
    result and the dtype that worked. A MatchError from ``fn``'s own checks is not retried."""
    try:
        return fn(torch.float64), torch.float64
    except MatchError:
        raise
    except Exception as first:  # noqa: BLE001 - user code; retried at its own precision
        native = native_dtype(module)
        if native == torch.float64:
            raise MatchError(f"raised {describe_exception(first)}") from None
        try:
            return fn(native), native
        except MatchError:
            raise
        except Exception as err:  # noqa: BLE001 - reported, never propagated
            raise MatchError(f"raised {describe_exception(err)} (also in float64: "
                             f"{describe_exception(first)})") from None


def noise_floor(dtype: torch.dtype) -> float:
    """Relative rounding noise a comparison at ``dtype`` must tolerate (a few hundred ulps:
    a recurrence over long sequences accumulates rounding)."""
    return 0.0 if dtype == torch.float64 else 256 * torch.finfo(dtype).eps


__all__ = ["at_precision", "native_dtype", "cast_inputs", "primary_output", "run_checked",
           "describe_exception", "noise_floor"]
