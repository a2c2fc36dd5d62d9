"""The SEQUENCE graph: whole sequences in, the model's outputs out.

Input ``u``: (batch, length, d_input) floats or (batch, length) token ids, both axes dynamic
(ONNX dims ``batch`` and ``length``). Output ``y``: (batch, d_output) for classify models,
(batch, length, d_output) for lm models. Every recurrence is one ONNX ``Scan`` node (see
``onnx_scan``), so the same file serves any batch size and sequence length.
"""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from ..adapters import adapter_for
from ..compiler.precision import primary_output
from .onnx_scan import DEFAULT_SCAN_CHUNK
from .program import export_program

SEQUENCE_INPUT = "u"
SEQUENCE_OUTPUT = "y"


def _takes_use_cache(model: nn.Module) -> bool:
    try:
        return "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class PrimaryOutput(nn.Module):
    """``model`` returning only its primary tensor (``.logits`` of a ``ModelOutput``, or the
    first tensor of a tuple/dataclass): a graph has one output ``y``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, u):
        # Hugging Face models build a generation cache unless told not to: a sequence graph
        # has no cache.
        if _takes_use_cache(self.model):
            return primary_output(self.model(u, use_cache=False))
        return primary_output(self.model(u))


def has_state_space_layers(model: nn.Module) -> bool:
    """Whether any submodule is a registered state-space layer (so a Scan must appear)."""
    return any(adapter_for(m) is not None for m in model.modules())


def export_sequence(
    model: nn.Module, example: Tensor, opset: int | None, scan_chunk: int = DEFAULT_SCAN_CHUNK
):
    """``model`` (in eval mode) as a sequence-graph ``onnx.ModelProto``.

    ``example``: (batch ≥ 2, length ≥ 2, ...) inputs to trace with; neither size is baked in.
    ``scan_chunk``: time steps per Scan iteration (1: one step per iteration; ``onnx_scan``).
    """
    import torch

    plain = not _takes_use_cache(model)
    if plain:
        with torch.no_grad():
            plain = isinstance(model(example), torch.Tensor)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}
    return export_program(
        model if plain else PrimaryOutput(model),
        (example,),
        dynamic_shapes=(dims,),
        input_names=(SEQUENCE_INPUT,),
        output_names=(SEQUENCE_OUTPUT,),
        opset=opset,
        expect_scan=has_state_space_layers(model),
        scan_chunk=scan_chunk,
    )
