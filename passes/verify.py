"""``verify``: measure each rewritten block's error against its certified bound."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssmcompile.compiler import (
    BlockVerification,
    CompileState,
    ModulePass,
    PassResult,
    SignalError,
    block_inputs,
    l2_gain_error,
    model_output_error,
    signal_error,
)
from ssmcompile.compiler.precision import native_dtype, noise_floor
from ssmcompile.errors import VerificationError
from ssmcompile.numerics import hinf_error

PRECISIONS = ("auto", "float64")


@dataclass(frozen=True)
class Verify(ModulePass):
    """Runs the caller's and the final blocks on the inputs they see in the caller's model and
    checks measured ℓ2-gain error ≤ the block's summed bound (+ ``slack``).

    - ``probe=k``: verify on the first k example sequences only (0 = all).
    - ``precision=auto`` (default): a float32 block is first measured in float32; that is
      accepted when the error is within the bound, else it is measured again in float64.
      A block stored in float32 is allowed 256 ulps of its output scale on top of its bound
      (its rebuilt parameters are rounded to float32). ``precision=float64`` always measures
      in float64 (or in the block's own dtype when its code cannot run in float64, with that
      dtype's rounding allowed). Data-driven blocks have no bound: their error is reported in
      the precision ``auto`` gives.
    - ``hinf=true`` also estimates ‖G − G_r‖∞ on a frequency grid (seconds per block);
      ``output=true`` also compares the two whole models' outputs (two more forwards of the
      whole model). Both are off unless asked: they dominate an event's cost in training.

    Raises :class:`VerificationError` on any violation."""

    name = "verify"
    in_place = False

    hinf: bool = False
    slack: float = 1e-8
    probe: int = 0
    output: bool = False
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.probe < 0:
            raise ValueError(f"probe must be ≥ 0, got {self.probe}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")

    def _measure(self, original, reduced, u, limit: float | None) -> SignalError:
        native = native_dtype(original)
        if self.precision == "auto" and native != torch.float64:
            try:
                quick = signal_error(original, reduced, u, native)
            except Exception:  # noqa: BLE001 - user code: the float64 path reports it
                quick = None
            if quick is not None and (limit is None or quick.error <= limit):
                return quick
        return l2_gain_error(original, reduced, u)

    def run(self, state: CompileState) -> PassResult:
        names = list(state.records)
        examples = tuple(x[: self.probe] if self.probe and isinstance(x, torch.Tensor) else x
                         for x in state.example_inputs)
        inputs = block_inputs(state.original, names, examples) if names else {}
        broken = []
        for name in names:
            record = state.records[name]
            original = state.original.get_submodule(name)
            limit = (record.bound * (1 + 1e-6) + self.slack) if record.certified else None
            m = self._measure(original, state.model.get_submodule(name), inputs[name], limit)
            precision = str(m.dtype).removeprefix("torch.")
            if limit is None:
                # Data-driven (selective) blocks: no H∞ bound exists; report the error only.
                state.verifications[name] = BlockVerification(name, None, m.error, None, True,
                                                              precision)
                continue
            hinf = _hinf(state, name) if self.hinf else None
            # The rebuilt layer stores its parameters in its own dtype: that rounding (and the
            # measurement's, when it ran below float64) is allowed on top of the bound.
            stored = noise_floor(native_dtype(state.model.get_submodule(name))) * m.gain
            ok = m.error <= limit + max(m.noise, stored) and (hinf is None or hinf <= limit)
            state.verifications[name] = BlockVerification(name, record.bound, m.error, hinf,
                                                          ok, precision)
            if not ok:
                broken.append(f"{name} (measured {m.error:.3e}, bound {record.bound:.3e})")
        if self.output:
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
