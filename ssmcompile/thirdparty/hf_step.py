"""A streaming (one token per call) view of a Hugging Face Mamba / FalconMamba / Mamba-2 LM
whose mixers were lowered to ours, for the ONNX step graph.

Hugging Face keeps the recurrent state in a cache object; the step graph needs it as explicit
tensors instead: per layer (conv window, SSM state) of the layer's current (reduced) size.
:class:`HFStepLM` runs the model's own embedding, norms, residuals and head around the lowered
mixers' ``step``, so its logits at each position equal the model's ``forward``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import MatchError
from .lowered import LoweredMixer


class HFStepLM(nn.Module):
    """``forward(ids)`` (batch, L) → logits (batch, L, vocab); ``initial_state(batch)``;
    ``step(ids_k (batch,), state) -> (logits_k (batch, vocab), state)``."""

    step_state_names = ("conv", "ssm")

    def __init__(self, model: nn.Module):
        super().__init__()
        backbone = getattr(model, "backbone", None)
        layers = getattr(backbone, "layers", None)
        if layers is None or not all(isinstance(getattr(b, "mixer", None), LoweredMixer)
                                     for b in layers):
            raise MatchError(f"{type(model).__name__} is not a Hugging Face Mamba LM with "
                             "lowered mixers")
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(ids, use_cache=False).logits

    def initial_state(self, batch_size: int) -> tuple[tuple[Tensor, Tensor], ...]:
        return tuple(b.mixer.block.initial_state(batch_size)
                     for b in self.model.backbone.layers)

    def step(self, ids_k: Tensor, state) -> tuple[Tensor, tuple]:
        bb = self.model.backbone
        x = bb.embeddings(ids_k)
        new_state = []
        for layer, layer_state in zip(bb.layers, state, strict=True):
            residual = x.to(torch.float32) if layer.residual_in_fp32 else x
            h = layer.norm(x.to(dtype=layer.norm.weight.dtype))
            y, layer_state = layer.mixer.block.step(h, layer_state)
            x = residual + y
            new_state.append(layer_state)
        x = bb.norm_f(x)
        head = self.model.lm_head
        return head(x.to(head.weight.dtype)).float(), tuple(new_state)


def step_model_for(model: nn.Module) -> nn.Module | None:
    """:class:`HFStepLM` around ``model`` if it is an HF Mamba LM with lowered mixers."""
    try:
        return HFStepLM(model)
    except MatchError:
        return None


__all__ = ["HFStepLM", "step_model_for"]
