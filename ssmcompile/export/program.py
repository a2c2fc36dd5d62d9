"""One module → one ONNX ``ModelProto`` through ``torch.export`` and the dynamo ONNX exporter.

We run ``torch.export`` ourselves (rather than letting ``torch.onnx.export`` do it) so that the
exported program can be inspected first: it tells which of our scan custom ops the graph calls
(the translation table is built from exactly those) and whether the recurrence was captured as
one op node or — with a Python-loop scan — traced into per-step nodes, which would give a graph
that is unrolled and silently fixed to the export length.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .onnx_aten import aten_overrides
from .onnx_scan import DEFAULT_SCAN_CHUNK, scan_ops_in, scan_translation_table
from .result import ExportError

# The dynamo exporter targets opset 18 internally (its torchlib); lower opsets go through the
# ONNX version converter, which cannot convert every op these models use.
MIN_OPSET = 18


def max_opset() -> int:
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int | None) -> None:
    if opset is None:
        return
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ExportError(f"opset must be an int in [{MIN_OPSET}, {top}], got {opset!r}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's log lines and deprecation chatter (the CLI prints its own)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def export_program(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    dynamic_shapes: Sequence[dict[int, Any]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int | None,
    expect_scan: bool,
    scan_chunk: int = DEFAULT_SCAN_CHUNK,
):
    """``module(*args)`` as an ``onnx.ModelProto`` with the given dynamic axes and names.

    ``expect_scan``: the module holds state-space layers, so its graph must call at least one
    scan custom op; otherwise the recurrence was traced step by step and ExportError is raised.
    ``scan_chunk``: time steps per Scan iteration (1: one step per iteration; ``onnx_scan``).
    """
    check_opset(opset)
    with _quiet_exporter():
        try:
            program = torch.export.export(
                module, args, dynamic_shapes=tuple(dynamic_shapes), strict=False
            )
        except ExportError:
            raise
        except Exception as err:
            hint = ""
            if "Constraints violated" in str(err):
                hint = " (a dynamic axis was specialised: is a recurrence a Python loop?)"
            raise ExportError(f"torch.export failed: {_first_line(err)}{hint}") from None
        ops = scan_ops_in(program.graph)
        if expect_scan and not ops:
            raise ExportError(
                "the model's recurrence did not trace to a scan custom op (ssmcompile.ops); "
                "its ONNX graph would be unrolled over time"
            )
        table = {**aten_overrides(program.graph), **scan_translation_table(ops, scan_chunk)}
        try:
            onnx_program = torch.onnx.export(
                program,
                (),
                dynamo=True,
                custom_translation_table=table,
                # Passed again so the exporter names the ONNX axes after our Dims ("batch", ...);
                # from the ExportedProgram alone it would write its symbols ("s44").
                dynamic_shapes=tuple(dynamic_shapes),
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                optimize=True,
                verbose=False,
            )
        except ExportError:
            raise
        except Exception as err:
            raise ExportError(f"ONNX conversion failed: {_first_line(err)}") from None
    return onnx_program.model_proto


def opset_of(model) -> int:
    """The default-domain opset an ``onnx.ModelProto`` imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("exported model imports no default ONNX opset")


def add_metadata(model, entries: dict[str, str]) -> None:
    """Set ``metadata_props`` (string keys and values) on an ``onnx.ModelProto``."""
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
