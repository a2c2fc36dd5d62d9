"""``verify``: measure each rewritten block's error against its certified bound."""

from __future__ import annotations

import functools
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
from ssmcompile.compiler.activations import leading
from ssmcompile.compiler.precision import native_dtype, noise_floor
from ssmcompile.errors import VerificationError
from ssmcompile.numerics import hinf_error

PRECISIONS = ("auto", "float64")
SIGNALS = ("synthetic", "model")

# The synthetic probe: a fixed-seed white-noise batch fed to the block alone. Any input is a
# valid test of an LTI block (its gain is bounded on all of them); these sizes keep the two block
# forwards to milliseconds at n in the hundreds.
_SYNTH_BATCH = 2
_SYNTH_LENGTH = 256
# The default system check: the grid's uniform part and how many input directions screen it
# (the best screened frequencies are then evaluated on the full response).
_GRID = 128
_SKETCH = 4


@dataclass(frozen=True)
class Verify(ModulePass):
    """Checks each rewritten block against its summed bound (+ ``slack``) twice: from the
    systems (no model forward) and on signals through the modules themselves.

    - System check (certified blocks): ‖G − G_r‖∞ estimated on a frequency grid, G read from
      the caller's block and G_r the float64 truncation result (for a block truncated more than
      once in the pipeline, G_r is read back from the final block, end to end). Default: a
      128-point grid plus the pole angles, screened along 4 input directions, the best
      frequencies evaluated exactly, no zoom (a lower bound of the norm, milliseconds).
      ``hinf=true``: the refined estimate (512 points, zoom on the peaks; seconds per block).
      The estimate is ``hinf`` in the verification.
    - Signal check: the caller's and the final block run on one input, measured error
      ``max ‖y − y_r‖₂ / ‖u‖₂``, an ℓ2 gain that ‖G − G_r‖∞ bounds. ``signal=synthetic``
      (default, certified blocks): a fixed-seed white-noise batch (2 × min(L, 256) × features)
      fed to the block alone; it checks that the rebuilt module realises what the systems say.
      ``signal=model``: the block's inputs in the caller's model on the example batch (one
      forward of the whole model). Data-driven (selective) blocks are always measured on
      model inputs: they have no bound, and their error depends on the data.
    - ``probe=k``: model inputs (and ``output``) use the first k example sequences (0 = all).
    - ``precision=auto`` (default): a float32 block is first measured in float32; that is
      accepted when the error is within the bound, else it is measured again in float64.
      A block stored in float32 is allowed 256 ulps of its output scale on top of its bound
      (its rebuilt parameters are rounded to float32). ``precision=float64`` always measures
      in float64 (or in the block's own dtype when its code cannot run in float64, with that
      dtype's rounding allowed). Data-driven blocks have no bound: their error is reported in
      the precision ``auto`` gives.
    - ``output=true`` also compares the two whole models' outputs (two more forwards of the
      whole model); off unless asked: it dominates an event's cost in training.

    Raises :class:`VerificationError` on any violation."""

    name = "verify"
    in_place = False

    hinf: bool = False
    slack: float = 1e-8
    probe: int = 0
    output: bool = False
    precision: str = "auto"
    signal: str = "synthetic"

    def __post_init__(self) -> None:
        if self.probe < 0:
            raise ValueError(f"probe must be ≥ 0, got {self.probe}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")

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
        examples = leading(state.example_inputs, self.probe)
        synthetic = {name: u for name in names
                     if (u := self._synthetic(state, name)) is not None}
        from_model = [name for name in names if name not in synthetic]
        inputs = block_inputs(state.original, from_model, examples) if from_model else {}
        inputs.update(synthetic)
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
            hinf = _system_error(state, name, self.hinf)
            # The rebuilt layer stores its parameters in its own dtype: that rounding (and the
            # measurement's, when it ran below float64) is allowed on top of the bound.
            stored = noise_floor(native_dtype(state.model.get_submodule(name))) * m.gain
            ok = m.error <= limit + max(m.noise, stored) and hinf <= limit
            state.verifications[name] = BlockVerification(name, record.bound, m.error, hinf,
                                                          ok, precision)
            if not ok:
                broken.append(f"{name} (measured {m.error:.3e}, H∞ estimate {hinf:.3e}, "
                              f"bound {record.bound:.3e})")
        if self.output:
            state.output_error = model_output_error(state.original, state.model, examples)
        if broken:
            raise VerificationError("reduced block(s) break the certified bound: "
                                    + "; ".join(broken))
        return PassResult(state, modified=False)

    def _synthetic(self, state: CompileState, name: str) -> torch.Tensor | None:
        """The synthetic probe for a certified block whose input shape was observed, else
        ``None`` (its inputs then come from the model)."""
        if self.signal != "synthetic" or not state.records[name].certified:
            return None
        block = state.initial_block(name)
        if block.in_shape is None or len(block.in_shape) != 3:
            return None
        length = min(block.in_shape[1], _SYNTH_LENGTH)
        # A black-box identification certifies inputs of at most its horizon only.
        length = min(length, getattr(block.adapter, "horizon", length))
        return synthetic_probe(length, block.in_shape[2]).clone()  # user code may write it


@functools.lru_cache(maxsize=8)
def synthetic_probe(length: int, features: int) -> torch.Tensor:
    """(2, length, features) float64 white noise, the same for every call (seeded; cached,
    so never write into it)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(_SYNTH_BATCH, length, features, generator=g, dtype=torch.float64)


def _system_error(state: CompileState, name: str, thorough: bool) -> float:
    """‖G − G_r‖∞ estimated from the systems: G read from the caller's block by the adapter
    that matched it there; G_r the float64 truncation result (exactly what the bound certifies)
    when the pipeline truncated the block once, else read back from the final block, so a block
    truncated twice is compared end to end."""
    first = state.initial_block(name).adapter.read(state.original.get_submodule(name))
    if len(state.records[name].steps) == 1 and name in state.rewrites:
        last = state.rewrites[name].system
    else:
        last = state.block(name).adapter.read(state.model.get_submodule(name))
    if thorough:
        return hinf_error(first, last)
    return hinf_error(first, last, n_grid=_GRID, refine=False, sketch=_SKETCH)
