"""``verify``: measure each rewritten block's error against its certified bound."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssmcompile.compiler import (
    BlockVerification,
    CompileState,
    ModulePass,
    PassResult,
    block_inputs,
    l2_gain,
    l2_gain_error,
    model_output_error,
)
from ssmcompile.compiler.precision import noise_floor
from ssmcompile.errors import VerificationError
from ssmcompile.numerics import hinf_error


@dataclass(frozen=True)
class Verify(ModulePass):
    """Runs the caller's and the final blocks on the inputs they see in the caller's model and
    checks measured ℓ2-gain error ≤ the block's summed bound (+ ``slack``). ``hinf=true`` also
    estimates ‖G − G_r‖∞ on a frequency grid (seconds per block). ``probe=k`` verifies on the
    first k example sequences only (0 = all): the float64 forwards dominate a reduction
    event's cost in training. A block that cannot run in float64 is checked in its own dtype,
    with that dtype's rounding noise allowed. Raises :class:`VerificationError` on any
    violation."""

    name = "verify"
    in_place = False

    hinf: bool = False
    slack: float = 1e-8
    probe: int = 0

    def __post_init__(self) -> None:
        if self.probe < 0:
            raise ValueError(f"probe must be ≥ 0, got {self.probe}")

    def run(self, state: CompileState) -> PassResult:
        names = list(state.records)
        examples = tuple(x[: self.probe] if self.probe and isinstance(x, torch.Tensor) else x
                         for x in state.example_inputs)
        inputs = block_inputs(state.original, names, examples) if names else {}
        broken = []
        for name in names:
            record = state.records[name]
            original = state.original.get_submodule(name)
            measured, dtype = l2_gain_error(original, state.model.get_submodule(name),
                                            inputs[name])
            if not record.certified:
                # Data-driven (selective) blocks: no H∞ bound exists; report the error only.
                state.verifications[name] = BlockVerification(name, None, measured, None, True,
                                                              str(dtype).removeprefix("torch."))
                continue
            hinf = _hinf(state, name) if self.hinf else None
            floor = noise_floor(dtype)
            noise = floor * l2_gain(original, inputs[name], dtype) if floor else 0.0
            limit = record.bound * (1 + 1e-6) + self.slack + noise
            ok = measured <= limit and (hinf is None or hinf <= limit)
            state.verifications[name] = BlockVerification(
                name, record.bound, measured, hinf, ok, str(dtype).removeprefix("torch."))
            if not ok:
                broken.append(f"{name} (measured {measured:.3e}, bound {record.bound:.3e})")
        state.output_error = model_output_error(state.original, state.model, examples)
        if broken:
            raise VerificationError("reduced block(s) break the certified bound: "
                                    + "; ".join(broken))
        return PassResult(state, modified=False)


def _hinf(state: CompileState, name: str) -> float:
    """‖G − G_r‖∞ between the caller's block (read by the adapter that matched it there) and
    the final one, so a block truncated twice in one pipeline is compared end to end."""
    first = state.initial_block(name).adapter.read(state.original.get_submodule(name))
    last = state.block(name).adapter.read(state.model.get_submodule(name))
    return hinf_error(first, last)
