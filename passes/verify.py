"""``verify``: measure each rewritten block's error against its certified bound."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ssmcompile.compiler import (
    BlockVerification,
    CompileState,
    ModulePass,
    PassResult,
    block_inputs,
    is_certified,
    l2_gain_error,
    register_pass,
)
from ssmcompile.errors import VerificationError
from ssmcompile.numerics import hinf_error


@register_pass
@dataclass(frozen=True)
class Verify(ModulePass):
    """Runs original and reduced blocks on the inputs they see in the original model and checks
    measured ℓ2-gain error ≤ 2·Σ tail (+ ``slack``). ``hinf=true`` also estimates ‖G − G_r‖∞ on
    a frequency grid (seconds per block). ``probe=k`` verifies on the first k example sequences
    only (0 = all): the float64 forwards dominate a reduction event's cost in training.
    Raises :class:`VerificationError` on any violation."""

    name = "verify"
    in_place = False

    hinf: bool = False
    slack: float = 1e-8
    probe: int = 0

    def __post_init__(self) -> None:
        if self.probe < 0:
            raise ValueError(f"probe must be ≥ 0, got {self.probe}")

    def run(self, state: CompileState) -> PassResult:
        names = [n for n in state.rewrites]
        examples = tuple(x[: self.probe] if self.probe and isinstance(x, torch.Tensor) else x
                         for x in state.example_inputs)
        inputs = block_inputs(state.original, names, examples) if names else {}
        broken = []
        for name in names:
            measured = l2_gain_error(state.original.get_submodule(name),
                                     state.model.get_submodule(name), inputs[name])
            if not is_certified(state.block(name)):
                # Data-driven (selective) blocks: no H∞ bound exists; report the error only.
                state.verifications[name] = BlockVerification(name, None, measured, None, True)
                continue
            bound = state.bounds[name]
            hinf = _hinf(state, name) if self.hinf else None
            limit = bound * (1 + 1e-6) + self.slack
            ok = measured <= limit and (hinf is None or hinf <= limit)
            state.verifications[name] = BlockVerification(name, bound, measured, hinf, ok)
            if not ok:
                broken.append(f"{name} (measured {measured:.3e}, bound {bound:.3e})")
        state.output_error = _output_error(state, examples)
        if broken:
            raise VerificationError("reduced block(s) break the certified bound: "
                                    + "; ".join(broken))
        return PassResult(state, modified=False)


def _hinf(state: CompileState, name: str) -> float:
    """‖G − G_r‖∞ between the caller's block and the final one (read afresh, so a block
    truncated twice in one pipeline is compared end to end)."""
    adapter = state.block(name).adapter
    return hinf_error(adapter.read(state.original.get_submodule(name)),
                      adapter.read(state.model.get_submodule(name)))


def _output_error(state: CompileState, examples: tuple) -> float:
    a = copy.deepcopy(state.original).double().eval()
    b = copy.deepcopy(state.model).double().eval()
    inputs = tuple(x.double() if torch.is_floating_point(x) else x for x in examples)
    with torch.no_grad():
        return float((a(*inputs) - b(*inputs)).abs().max())
