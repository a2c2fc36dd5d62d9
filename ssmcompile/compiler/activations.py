"""What each module sees: block inputs, call shapes and who calls the scan ops, from one run.

Every run is on an eval-mode copy, so the caller's model and its BatchNorm statistics stay
untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..ops import SCAN_OPS
from .precision import describe_exception, primary_output

# Matching needs shapes and scan owners, not statistics: two sequences show both at a small
# fraction of a forward on the whole example batch (which dominated an event's matching cost).
# Two, not one, so that code squeezing a batch of one still sees its usual shapes.
OBSERVE_BATCH = 2


def leading(inputs: tuple, k: int) -> tuple:
    """``inputs`` with every tensor cut to its first ``k`` rows (``k = 0``: unchanged)."""
    return tuple(x[:k] if k and isinstance(x, torch.Tensor) and x.ndim else x for x in inputs)


def block_inputs(model: nn.Module, names: list[str], example_inputs: tuple
                 ) -> dict[str, torch.Tensor]:
    """The first positional input each named submodule receives when ``model`` runs on
    ``example_inputs``. Modules not called on these inputs are absent from the result."""
    replica = copy.deepcopy(model).eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        def hook(mod, args, name=name):
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, args[0].detach().clone())
        hooks.append(replica.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            replica(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


@dataclass(frozen=True)
class Call:
    """The first call of one module: its first input's and its output's shape and dtype
    (``out_shape`` is ``None`` when the output holds no tensor). The batch size is that of the
    observed run (see :func:`observe`)."""

    in_shape: tuple[int, ...]
    in_dtype: torch.dtype
    out_shape: tuple[int, ...] | None


@dataclass
class Observation:
    """One run of the model: ``calls`` by module name, ``scan_owners``: innermost module →
    the scan op it called first; ``error``: why the run failed (then both may be partial)."""

    calls: dict[str, Call] = field(default_factory=dict)
    scan_owners: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class _ScanWatch(TorchDispatchMode):
    """Notes which module is innermost on the stack whenever a scan op dispatches: works
    whether or not the model can be traced."""

    def __init__(self, stack: list[str], owners: dict[str, str]):
        super().__init__()
        self.stack, self.owners = stack, owners

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "name", lambda: "")()
        if name.startswith("ssmcompile::") and name.split("::")[1].split(".")[0] in SCAN_OPS:
            self.owners.setdefault(self.stack[-1] if self.stack else "", name)
        return func(*args, **(kwargs or {}))


def observe(model: nn.Module, example_inputs: tuple, batch: int = OBSERVE_BATCH) -> Observation:
    """Run an eval-mode copy of ``model`` once, recording each module's first call and the
    owners of scan calls. Never raises for an error inside the model: ``error`` says it.

    The run sees the first ``batch`` rows of each input tensor (0: all of them), so recorded
    shapes carry that batch size; a model that fails on the cut inputs (an input tensor without
    a batch dimension) is run once more on the whole batch."""
    if batch:
        obs = _observe(model, leading(example_inputs, batch))
        if obs.error is None:
            return obs
    return _observe(model, example_inputs)


def _observe(model: nn.Module, example_inputs: tuple) -> Observation:
    obs = Observation()
    try:
        replica = copy.deepcopy(model).eval()
    except Exception as err:  # noqa: BLE001 - a model that cannot be copied is reported
        obs.error = f"the model cannot be copied: {describe_exception(err)}"
        return obs
    stack: list[str] = []
    hooks = []
    for name, module in replica.named_modules():
        def pre(mod, args, name=name):
            stack.append(name)
            if name not in obs.calls and args and isinstance(args[0], torch.Tensor):
                obs.calls[name] = Call(tuple(args[0].shape), args[0].dtype, None)

        def post(mod, args, out, name=name):
            if stack and stack[-1] == name:
                stack.pop()
            call = obs.calls.get(name)
            if call is not None and call.out_shape is None:
                try:
                    shape = tuple(primary_output(out).shape)
                except Exception:  # noqa: BLE001 - an output without a tensor
                    return
                obs.calls[name] = Call(call.in_shape, call.in_dtype, shape)

        hooks.append(module.register_forward_pre_hook(pre))
        hooks.append(module.register_forward_hook(post, always_call=True))
    try:
        with torch.no_grad(), _ScanWatch(stack, obs.scan_owners):
            replica(*example_inputs)
    except Exception as err:  # noqa: BLE001 - user code: reported as a match failure
        obs.error = f"the model raised on the example inputs: {describe_exception(err)}"
    finally:
        for h in hooks:
            h.remove()
    return obs


__all__ = ["block_inputs", "observe", "leading", "OBSERVE_BATCH", "Observation", "Call", "SCAN_OPS"]
