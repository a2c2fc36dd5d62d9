"""onnxruntime-vs-PyTorch parity of exported graphs, on seeded random inputs.

- Sequence graph: batch 1 and > 1, at lengths DIFFERENT from the export length (a graph with a
  length baked in, or unrolled, fails here), against ``model(u)``.
- Step graph: iterated over a sequence with onnxruntime feeding back its own state (true
  streaming), against PyTorch's ``model.step`` per step and final state, and against the
  full-sequence ``model(u)`` (per-token outputs for lm models, the last step for classify).

The model must be in eval mode (BatchNorm running statistics; dropout off): ``export_onnx``
takes care of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..compiler.precision import primary_output
from .result import ParityError
from .runtime import SessionOptions, create_session
from .sampling import InputSampler, model_device
from .sequence import SEQUENCE_INPUT
from .step import STEP_INPUT, StateLayout


def _nan_as_inf(x: float) -> float:
    return float("inf") if math.isnan(x) else x


@dataclass(frozen=True)
class ParityRow:
    """One comparison: ``graph`` ("sequence" | "step") vs ``reference`` ("forward" | "step" |
    "state") at one batch size and sequence length."""

    graph: str
    reference: str
    batch: int
    length: int
    max_abs_err: float


@dataclass(frozen=True)
class ParityOptions:
    """``lengths=None``: two lengths derived from the export length (see ``check_lengths``)."""

    batches: tuple[int, ...] = (1, 3)
    lengths: tuple[int, ...] | None = None
    step_length: int = 9
    tolerance: float = 1e-4
    seed: int = 0
    session: SessionOptions = field(default_factory=SessionOptions)


@dataclass(frozen=True)
class ParityReport:
    rows: tuple[ParityRow, ...]
    providers: tuple[str, ...]
    tolerance: float

    @property
    def max_abs_err(self) -> float:
        """The largest error; NaN counts as infinite."""
        return max((_nan_as_inf(r.max_abs_err) for r in self.rows), default=0.0)

    @property
    def ok(self) -> bool:
        # NaN compares False: a NaN output fails the check.
        return all(r.max_abs_err <= self.tolerance for r in self.rows)

    def lines(self) -> list[str]:
        out = [f"onnxruntime providers: {', '.join(self.providers)}"]
        for r in self.rows:
            flag = "ok" if r.max_abs_err <= self.tolerance else "FAIL"
            out.append(
                f"parity {r.graph} vs torch {r.reference}: batch {r.batch} length {r.length} "
                f"max|err| {r.max_abs_err:.3e} (tol {self.tolerance:.0e}) {flag}"
            )
        return out

    def raise_if_failed(self) -> None:
        """ParityError (carrying this report as ``.report``) unless every row is in tolerance."""
        if not self.ok:
            worst = max(
                (r for r in self.rows if not r.max_abs_err <= self.tolerance),
                key=lambda r: _nan_as_inf(r.max_abs_err),
            )
            err = ParityError(
                f"onnxruntime differs from PyTorch by {worst.max_abs_err:.3e} > tolerance "
                f"{self.tolerance:.0e} ({worst.graph} graph vs torch {worst.reference}, "
                f"batch {worst.batch}, length {worst.length})"
            )
            err.report = self
            raise err


def check_lengths(export_length: int) -> tuple[int, int]:
    """A shorter and a longer length than ``export_length``, neither equal to it."""
    return max(1, export_length // 2 - 1), 2 * export_length + 3


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _err(a: np.ndarray, b: Tensor) -> float:
    """max |a − b|; inf for a shape mismatch or a non-finite value (so it never passes)."""
    ref = _np(b).astype(np.float64)
    if a.shape != ref.shape:
        return float("inf")
    diff = np.abs(a.astype(np.float64) - ref)
    if not np.isfinite(diff).all():
        return float("inf")
    return float(diff.max()) if diff.size else 0.0


def check_sequence_parity(
    model: nn.Module,
    path: Path,
    sampler: InputSampler,
    export_length: int,
    options: ParityOptions | None = None,
) -> ParityReport:
    """Run the sequence graph at ``path`` and ``model`` on the same random inputs."""
    options = options or ParityOptions()
    session = create_session(path, options.session)
    g = torch.Generator().manual_seed(options.seed)
    device = model_device(model)
    rows = []
    with torch.no_grad():
        for length in options.lengths or check_lengths(export_length):
            for batch in options.batches:
                u = sampler.sequence(batch, length, g)
                (y,) = session.run(None, {SEQUENCE_INPUT: _np(u)})
                y_torch = primary_output(model(u.to(device)))
                rows.append(ParityRow("sequence", "forward", batch, length, _err(y, y_torch)))
    return ParityReport(tuple(rows), tuple(session.get_providers()), options.tolerance)


def check_step_parity(
    model: nn.Module,
    path: Path,
    sampler: InputSampler,
    layout: StateLayout,
    options: ParityOptions | None = None,
) -> ParityReport:
    """Stream a sequence through the step graph at ``path`` and compare with ``model``."""
    options = options or ParityOptions()
    session = create_session(path, options.session)
    g = torch.Generator().manual_seed(options.seed)
    device = model_device(model)
    length = options.step_length
    rows = []
    with torch.no_grad():
        for batch in options.batches:
            u = sampler.sequence(batch, length, g).to(device)
            state = model.initial_state(batch)
            flat = [_np(t) for t in layout.flatten(state)]
            step_err, onnx_ys = 0.0, []
            for k in range(length):
                y_torch, state = model.step(u[:, k], state)
                feed = {STEP_INPUT: _np(u[:, k]), **dict(zip(layout.names, flat, strict=True))}
                y_onnx, *flat = session.run(None, feed)
                onnx_ys.append(y_onnx)
                step_err = max(step_err, _err(y_onnx, y_torch))
            state_err = max(
                (_err(a, b) for a, b in zip(flat, layout.flatten(state), strict=True)),
                default=0.0,
            )
            y_full = model(u)
            # lm: one output per token; classify: the last step's running-mean output.
            streamed = np.stack(onnx_ys, axis=1) if y_full.dim() == 3 else onnx_ys[-1]
            rows += [
                ParityRow("step", "step", batch, length, step_err),
                ParityRow("step", "state", batch, length, state_err),
                ParityRow("step", "forward", batch, length, _err(streamed, y_full)),
            ]
    return ParityReport(tuple(rows), tuple(session.get_providers()), options.tolerance)
