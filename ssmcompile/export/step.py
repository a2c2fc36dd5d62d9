"""The STEP graph: one time step with the recurrent state as explicit inputs and outputs.

For streaming inference: feed ``u_k`` (batch, d_input) floats or (batch,) token ids plus the
current state, get ``y_k`` (batch, d_output) and the next state; start from zeros. State tensors
are named per block ``i``: ``state_{i}_re`` / ``state_{i}_im`` for the complex diagonal layers
(LRU, S5: (batch, r); S4D: (batch, H, r)), ``state_{i}`` for a dense layer (batch, r),
``state_{i}_conv`` (batch, d_inner, d_conv − 1) / ``state_{i}_ssm`` (batch, d_inner, r) for a
selective (Mamba) layer of a model that names them in ``step_state_names``; a
classify model also carries its running mean as ``pool_sum`` (batch, H) and ``pool_count``
(batch, 1). Outputs are ``y_k`` and ``new_<state name>`` in the same order. ``r`` is each
block's current — after reduction, reduced — state size; only the batch axis is dynamic.

Exported from :class:`StepGraphModule`, a flat-tensor wrapper around ``model.step``; the step
has no scan, so the exporter only sees elementwise ops and matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .program import export_program
from .result import ExportError

STEP_INPUT = "u_k"
STEP_OUTPUT = "y_k"
NEW_STATE_PREFIX = "new_"


@dataclass(frozen=True)
class StateLayout:
    """How ``model.initial_state``'s nested tuples map to flat named tensors.

    ``group_sizes``: tensors per group (one group per block, then e.g. the classify pool);
    ``names`` and ``shapes`` (without the batch axis): one entry per tensor, in order.
    """

    group_sizes: tuple[int, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def flatten(self, state: tuple[tuple[Tensor, ...], ...]) -> tuple[Tensor, ...]:
        return tuple(t for group in state for t in group)

    def unflatten(self, flat: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], ...]:
        groups, start = [], 0
        for size in self.group_sizes:
            groups.append(tuple(flat[start : start + size]))
            start += size
        return tuple(groups)


def _group_names(
    index: int, size: int, prefix: str, suffixes: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    if suffixes is not None and len(suffixes) == size:
        return tuple(f"{prefix}{index}_{s}" for s in suffixes)
    if size == 1:
        return (f"{prefix}{index}",)
    if size == 2:
        return (f"{prefix}{index}_re", f"{prefix}{index}_im")
    return tuple(f"{prefix}{index}_{j}" for j in range(size))


def state_layout(model: nn.Module) -> StateLayout:
    """The flat state layout of ``model`` (needs ``initial_state`` and ``step``)."""
    if not (
        callable(getattr(model, "step", None)) and callable(getattr(model, "initial_state", None))
    ):
        raise ExportError(
            f"{type(model).__name__} has no step/initial_state, so it has no step graph"
        )
    template = model.initial_state(1)
    n_blocks = len(getattr(model, "blocks", template))
    task = getattr(getattr(model, "spec", None), "task", None)
    # A model whose block states are not (re, im) pairs may name them, e.g. ("conv", "ssm").
    suffixes = getattr(model, "step_state_names", None)
    names: list[str] = []
    for i, group in enumerate(template):
        if i < n_blocks:
            names.extend(_group_names(i, len(group), "state_", suffixes))
        elif task == "classify" and len(group) == 2 and i == len(template) - 1:
            names.extend(("pool_sum", "pool_count"))
        else:
            names.extend(_group_names(i - n_blocks, len(group), "aux_"))
    shapes = tuple(tuple(int(d) for d in t.shape[1:]) for group in template for t in group)
    return StateLayout(tuple(len(g) for g in template), tuple(names), shapes)


class StepGraphModule(nn.Module):
    """``forward(u_k, *states) -> (y_k, *new_states)`` around ``model.step`` with flat states.

    Shapes: ``u_k`` (batch, d_input) or (batch,); each state as ``layout.shapes`` with a leading
    batch axis. Holds ``model`` as a submodule (no copy).
    """

    def __init__(self, model: nn.Module, layout: StateLayout) -> None:
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, u_k: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        y_k, new_state = self.model.step(u_k, self.layout.unflatten(states))
        return (y_k, *self.layout.flatten(new_state))


def export_step(model: nn.Module, example_u_k: Tensor, layout: StateLayout, opset: int | None):
    """The step graph of ``model`` (in eval mode) as an ``onnx.ModelProto``.

    ``example_u_k``: (batch ≥ 2, ...) one time step of inputs; states are drawn to match.
    """
    batch = int(example_u_k.shape[0])
    g = torch.Generator().manual_seed(1)
    param = next(model.parameters())
    states = tuple(
        torch.randn((batch, *s), generator=g, dtype=param.dtype).to(param.device)
        for s in layout.shapes
    )
    dim = torch.export.Dim("batch")
    return export_program(
        StepGraphModule(model, layout),
        (example_u_k, *states),
        # *states is one varargs entry for torch.export: its specs nest in a tuple.
        dynamic_shapes=({0: dim}, tuple({0: dim} for _ in states)),
        input_names=(STEP_INPUT, *layout.names),
        output_names=(STEP_OUTPUT, *(NEW_STATE_PREFIX + n for n in layout.names)),
        opset=opset,
        expect_scan=False,
    )
