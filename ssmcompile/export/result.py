"""What an ONNX export produced: ``ExportResult``, ``GraphStats`` and the export errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SSMCompileError, VerificationError

if TYPE_CHECKING:
    from .check import ParityReport


class ExportError(SSMCompileError):
    """A model cannot be exported to ONNX (the message says why)."""


class ParityError(VerificationError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class GraphStats:
    """Node counts of an ONNX graph; ``total_nodes`` includes nodes inside subgraphs."""

    top_level_nodes: int
    total_nodes: int
    scan_nodes: int
    loop_nodes: int

    @property
    def has_recurrence_node(self) -> bool:
        return self.scan_nodes + self.loop_nodes > 0


@dataclass(frozen=True)
class ExportResult:
    """One written ONNX file.

    - ``graph``: ``"sequence"`` (inputs ``u`` (batch, length[, d_input]) → ``y``) or ``"step"``
      (``u_k`` plus ``state_names`` → ``y_k`` plus ``new_`` + each state name).
    - ``state_shapes``: per state input its shape with ``None`` for the dynamic batch (step
      graphs only; empty for sequence graphs).
    - ``data_path``: the side weights file, only for models over protobuf's 2 GiB limit;
      ``None`` means the ``.onnx`` file is self-contained.
    - ``parity``: the onnxruntime-vs-PyTorch report when the export ran with ``check=True``
      (against the caller's model, third-party blocks included).
    - ``lowered``: third-party blocks replaced by ours before export (``lowering``), with the
      relative error each replacement was measured at.
    """

    path: Path
    graph: str
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    state_shapes: tuple[tuple[str, tuple[int | None, ...]], ...]
    export_length: int
    stats: GraphStats
    data_path: Path | None = None
    parity: ParityReport | None = None
    lowered: tuple = ()

    @property
    def self_contained(self) -> bool:
        return self.data_path is None

    def summary(self) -> str:
        """A few human-readable lines for the CLI."""
        s = self.stats
        lines = [
            f"wrote {self.path} ({self.graph} graph, opset {self.opset}, "
            f"{'self-contained' if self.self_contained else f'weights in {self.data_path}'})",
            f"nodes: {s.top_level_nodes} top-level, {s.total_nodes} with subgraphs, "
            f"{s.scan_nodes} Scan, {s.loop_nodes} Loop",
            f"inputs: {', '.join(self.input_names)}",
            f"outputs: {', '.join(self.output_names)}",
        ]
        if self.state_shapes:
            shapes = ", ".join(f"{n}{list(shape)}" for n, shape in self.state_shapes)
            lines.append(f"state shapes (None = batch): {shapes}")
        if self.parity is not None:
            lines.extend(self.parity.lines())
        return "\n".join(lines)
