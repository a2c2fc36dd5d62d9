"""torch.compile for training, around reductions that change parameter shapes.

Policy: compile the whole model once, and after every swap call ``torch._dynamo.reset()`` and
compile the new model once more. Without the reset, every new state size is a recompile of the
same code objects, and past ``torch._dynamo.config.recompile_limit`` (8) dynamo silently falls
back to eager for the rest of the run; with it, each size is a fresh first compile (and a size
seen before comes back from the FX graph cache in about a second).

Default (``compile = "auto"``): on for CUDA, off for CPU. Measured on this project's 2-core CPU
(torch 2.13, 1 thread, one LRU block, H = 48, n = 96, L = 64, batch 64): eager 0.14–0.20 s a
step, inductor 0.12 s a step after a 138 s first compile — and every reduction event pays the
compile again, so a 1,000-step run never earns it back.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ConfigError


def should_compile(setting: str, device: torch.device) -> bool:
    """``"on"`` / ``"off"`` as given; ``"auto"`` compiles on CUDA only (see the module doc)."""
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"compile must be auto|on|off, got {setting!r}")
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def check_backend(name: str) -> None:
    """``name`` is a registered torch.compile backend (ConfigError otherwise), checked before a
    run starts: an unknown one used to fail as torch's InvalidBackend at the first step."""
    from torch._dynamo.backends.registry import lookup_backend

    try:
        lookup_backend(name)
    except Exception:  # noqa: BLE001 - torch raises InvalidBackend, or a plugin's own error
        raise ConfigError(f"compile_backend {name!r} is not a torch.compile backend (see "
                          "torch._dynamo.list_backends())") from None


def compile_model(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """A fresh compiled wrapper around ``module`` (whole model, one graph when possible).

    Resets dynamo first, so caches keyed on the previous model's code objects and shapes cannot
    push this one over the recompile limit. The raw ``module`` is not modified; checkpoints and
    the compiler passes always use it, never the wrapper.
    """
    torch._dynamo.reset()
    return torch.compile(module, backend=backend)


__all__ = ["should_compile", "compile_model", "check_backend"]
