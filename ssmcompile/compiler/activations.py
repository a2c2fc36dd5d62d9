"""What each block sees: the inputs of named submodules on one run of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


def block_inputs(model: nn.Module, names: list[str], example_inputs: tuple
                 ) -> dict[str, torch.Tensor]:
    """The first positional input each named submodule receives when ``model`` runs on
    ``example_inputs`` — on an eval-mode copy, so the caller's model and its BatchNorm
    statistics stay untouched. Modules not called on these inputs are absent from the result."""
    replica = copy.deepcopy(model).eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        def hook(mod, args, name=name):
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, args[0].detach().clone())
        hooks.append(replica.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            replica(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen
