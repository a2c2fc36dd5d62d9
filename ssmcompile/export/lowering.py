"""Lower third-party state-space blocks to ssmcompile's own before export.

A layer written elsewhere (lru-pytorch's Python loop, s5-pytorch's vmap, a black-box FFT
convolution, a user's scan-calling module) cannot be exported with a dynamic length: its
recurrence is Python control flow. Each matched block that is not one of ours is replaced, on a
copy, by an equivalent block built on our scan ops:

- LTI blocks (certified adapters): a :class:`~ssmcompile.compiler.CanonicalSSM` realising the
  system the adapter reads;
- selective blocks: the adapter's own ``lower(module)`` (e.g. Mamba mixers to our Mamba
  blocks), when it has one.

Each replacement is checked at lowering time on the input the block sees in the model: the
relative error max|y − y_low| / max|y| must be ≤ ``rtol`` (1e-5), else :class:`ExportError`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..compiler import CanonicalSSM, block_inputs, is_calibrated, prepare, replace_module
from ..compiler.precision import native_dtype, primary_output
from ..layers import LRU, S4D, S5, DenseLTI
from .result import ExportError

DEFAULT_RTOL = 1e-5


def _ours() -> tuple[type, ...]:
    from ..attention import LinearAttention
    from ..selective import Mamba1Block, Mamba2Block

    return (LRU, S5, S4D, DenseLTI, CanonicalSSM, Mamba1Block, Mamba2Block, LinearAttention)


def _needs_lowering(block, module: nn.Module) -> bool:
    """Ours export as they are; so does a user's module that calls our scan ops on real
    tensors. One with complex tensors must be lowered: ONNX graphs carry no complex type."""
    if isinstance(module, _ours()):
        return False
    if block.rule == "scan-call":
        return any(t.is_complex() for t in [*module.parameters(), *module.buffers()])
    return True


@dataclass(frozen=True)
class LoweredBlock:
    """One replaced block: its name, kind, what it became and the measured relative error."""

    name: str
    kind: str
    lowered_to: str
    rel_error: float


def _lower_one(block, module: nn.Module) -> nn.Module:
    lower = getattr(block.adapter, "lower", None)
    if lower is not None:
        return lower(module)
    if is_calibrated(block):
        raise ExportError(f"block {block.name!r} ({block.kind}) has no lowering to an "
                          "exportable block")
    system = block.adapter.read(module)
    ref = next(iter(module.parameters()), torch.empty(0))
    return CanonicalSSM(system, dtype=native_dtype(module)).to(ref.device).eval()


def lower_for_export(model: nn.Module, example_inputs, *, rtol: float = DEFAULT_RTOL
                     ) -> tuple[nn.Module, tuple[LoweredBlock, ...]]:
    """``model`` itself when all its blocks are ours, else a copy with the others lowered.

    ``example_inputs``: what the model takes (a tensor or a tuple); the blocks' inputs on it
    are what each replacement is checked on. The caller's model is never modified. A user's
    module that calls our scan ops on real tensors is left as it is (it already exports).
    """
    state = prepare(model, example_inputs)
    todo = [b for b in state.blocks if _needs_lowering(b, model.get_submodule(b.name))]
    if not todo:
        return model, ()
    inputs = block_inputs(model, [b.name for b in todo], state.example_inputs)
    lowered = copy.deepcopy(model)
    done = []
    for block in todo:
        original = model.get_submodule(block.name)
        new = _lower_one(block, original)
        u = inputs.get(block.name)
        if u is None:
            raise ExportError(f"block {block.name!r} was not called on the example inputs")
        with torch.no_grad():
            y = primary_output(copy.deepcopy(original).eval()(u))
            y_new = primary_output(new.eval()(u))
        scale = float(y.abs().max())
        err = float((y_new - y).abs().max()) / (scale if scale > 0 else 1.0)
        if not err <= rtol:
            raise ExportError(f"lowering block {block.name!r} ({block.kind}) to "
                              f"{type(new).__name__} changes its output by {err:.2e} "
                              f"relative (limit {rtol:g})")
        new.train(original.training)
        lowered = replace_module(lowered, block.name, new)
        done.append(LoweredBlock(block.name, block.kind, type(new).__name__, err))
    return lowered, tuple(done)


__all__ = ["lower_for_export", "LoweredBlock", "DEFAULT_RTOL"]
