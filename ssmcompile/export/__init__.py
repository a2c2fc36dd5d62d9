"""ONNX deployment of (full or reduced) SSM models: sequence and step graphs, onnxruntime parity.

    result = export_onnx(model, "model.onnx")                    # whole sequences
    result = export_onnx(model, "step.onnx", step=True, check=True)   # streaming, checked

- Sequence graph (``sequence``): ``u`` (batch, length[, d_input]) → ``y``, batch AND length
  dynamic; each recurrence is one ONNX ``Scan`` node (``onnx_scan``), never unrolled.
  Each Scan iteration solves ``scan_chunk`` steps as matrix work (``onnx_chunked``; 1: one step).
- Empty inputs: batch 0 or length 0 give an empty output of the right shape (a classify graph
  at length 0: its pooled mean of no steps is 0 in onnxruntime, so ``y`` is the head's bias).
  The scans pad such inputs to one step and crop the result (``onnx_builder.at_least_one_step``):
  onnxruntime's Scan dies with SIGFPE on them; aten ops whose translation fails there are
  overridden (``onnx_aten``).
- Step graph (``step``): ``u_k`` plus named state tensors of the model's current (reduced) size
  → ``y_k`` plus the next state, for streaming inference.
- The written ``.onnx`` is self-contained (weights inline) below protobuf's 2 GiB limit, and is
  written atomically: a failed export or check leaves no file (``onnx_file``).
- ``check=True`` runs the file in onnxruntime against PyTorch (``check``): max |error| must be
  ≤ ``tolerance`` (1e-4, float32) or ``ParityError`` is raised and nothing is written.

onnxruntime comes from ONE of two extras: ``ssmcompile[onnx]`` (``onnxruntime``, CPU) or
``ssmcompile[gpu]`` (``onnxruntime-gpu``, CUDAExecutionProvider; ``device="cuda"``). They
install the same module and overwrite each other: having both triggers a ``RuntimeWarning``
(``runtime``). The providers a session actually used are reported (``ParityReport.providers``),
because onnxruntime-gpu falls back to CPU silently when CUDA libraries are missing.

Requires torch 2.13's dynamo ONNX exporter (a private helper of it builds the Scan nodes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from torch import Tensor, nn

from .check import ParityOptions, ParityReport, ParityRow, check_sequence_parity, check_step_parity
from .lowering import LoweredBlock, lower_for_export
from .onnx_file import check_output_path, graph_stats, staged_onnx_file
from .onnx_scan import DEFAULT_SCAN_CHUNK, check_scan_chunk
from .program import add_metadata, check_opset, opset_of
from .result import ExportError, ExportResult, GraphStats, ParityError
from .runtime import DEVICES, SessionOptions, create_session, installed_onnxruntime_distributions
from .sampling import DEFAULT_EXPORT_LENGTH, export_example, model_device, sampler_for
from .sequence import SEQUENCE_INPUT, SEQUENCE_OUTPUT, export_sequence, has_state_space_layers
from .step import (
    NEW_STATE_PREFIX,
    STEP_INPUT,
    STEP_OUTPUT,
    StateLayout,
    StepGraphModule,
    export_step,
    state_layout,
)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the duration; every submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError(
            "ONNX export needs onnx and onnxscript: install the 'onnx' or 'gpu' extra"
        ) from None


def _metadata(
    model: nn.Module, graph: str, length: int, layout: StateLayout | None, scan_chunk: int
) -> dict:
    meta = {"ssmcompile.graph": graph, "ssmcompile.export_length": str(length)}
    if graph == "sequence":
        meta["ssmcompile.scan_chunk"] = str(scan_chunk)
    if layout is not None:
        meta["ssmcompile.state_names"] = json.dumps(list(layout.names))
    spec = getattr(model, "spec", None)
    if callable(getattr(spec, "to_dict", None)):
        meta["ssmcompile.spec"] = json.dumps(spec.to_dict(), sort_keys=True)
    return meta


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    step: bool = False,
    opset: int | None = None,
    example_inputs: Tensor | tuple[Tensor] | None = None,
    check: bool = False,
    export_length: int | None = None,
    device: str = "cpu",
    tolerance: float = 1e-4,
    scan_chunk: int = DEFAULT_SCAN_CHUNK,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path``: the sequence graph, or with ``step`` the step graph.

    ``example_inputs``: (batch, length[, d_input]) floats or (batch, length) token ids; only
    their format (and length, unless ``export_length`` is given) is used — tracing runs on
    seeded random inputs of batch 2 so no size is baked in. Defaults to ``model.spec``'s format
    at length 16. ``opset``: ONNX opset (≥ 18), ``None`` for the exporter's default.
    ``check``: onnxruntime parity on ``device`` ("cpu" | "cuda") before the file is written.
    ``scan_chunk``: time steps each ONNX Scan iteration solves as matrix work in the sequence
    graph (1: the one-step body; large layers use fewer, see ``onnx_scan.layer_chunk``).
    The model is exported in eval mode and left in the modes it had.
    """
    _require_onnx()
    path = check_output_path(path)  # before the slow export: fail fast on a bad destination
    check_opset(opset)
    check_scan_chunk(scan_chunk)
    if device not in DEVICES:
        raise ExportError(f"device must be one of {DEVICES}, got {device!r}")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < float("inf")):
        raise ExportError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    sampler = sampler_for(model, example_inputs)
    if export_length is None:
        given = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
        export_length = int(given.shape[1]) if given is not None else DEFAULT_EXPORT_LENGTH
    example = export_example(sampler, export_length).to(model_device(model))
    graph = "step" if step else "sequence"
    reference = model
    # Blocks written elsewhere (Python-loop or vmap recurrences) are swapped for ours first.
    model, lowered = lower_for_export(model, example)
    if step and lowered and not callable(getattr(model, "step", None)):
        from ..thirdparty.hf_step import step_model_for

        model = step_model_for(model) or model  # HF LMs keep their state in a cache object
    with eval_mode(model), eval_mode(reference):
        if step:
            layout: StateLayout | None = state_layout(model)
            proto = export_step(model, example[:, 0], layout, opset)
            inputs = (STEP_INPUT, *layout.names)
            outputs = (STEP_OUTPUT, *(NEW_STATE_PREFIX + n for n in layout.names))
            shapes = tuple(
                (n, (None, *s)) for n, s in zip(layout.names, layout.shapes, strict=True)
            )
        else:
            layout = None
            proto = export_sequence(model, example, opset, scan_chunk)
            inputs, outputs, shapes = (SEQUENCE_INPUT,), (SEQUENCE_OUTPUT,), ()
        add_metadata(proto, _metadata(model, graph, export_length, layout, scan_chunk))
        stats = graph_stats(proto)
        if not step and has_state_space_layers(model) and not stats.has_recurrence_node:
            raise ExportError("exported sequence graph has no Scan/Loop node: it would be unrolled")
        parity: ParityReport | None = None
        with staged_onnx_file(proto, path) as (staged, data_path):
            if check:
                options = ParityOptions(tolerance=tolerance, session=SessionOptions(device))
                if layout is not None:
                    parity = check_step_parity(model, staged, sampler, layout, options)
                else:
                    parity = check_sequence_parity(reference, staged, sampler, export_length,
                                                   options)
                parity.raise_if_failed()
    return ExportResult(
        path=path,
        graph=graph,
        opset=opset_of(proto),
        input_names=inputs,
        output_names=outputs,
        state_shapes=shapes,
        export_length=export_length,
        stats=stats,
        data_path=data_path,
        parity=parity,
        lowered=lowered,
    )


__all__ = [
    "export_onnx",
    "lower_for_export",
    "LoweredBlock",
    "DEFAULT_SCAN_CHUNK",
    "ExportResult",
    "ExportError",
    "ParityError",
    "GraphStats",
    "ParityReport",
    "ParityRow",
    "ParityOptions",
    "SessionOptions",
    "StateLayout",
    "StepGraphModule",
    "state_layout",
    "graph_stats",
    "check_sequence_parity",
    "check_step_parity",
    "create_session",
    "installed_onnxruntime_distributions",
    "eval_mode",
]
