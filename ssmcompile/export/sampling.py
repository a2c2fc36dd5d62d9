"""Model inputs for exporting and checking: example tensors and seeded random draws."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .result import ExportError

# Export traces at this length unless told otherwise; any length works at run time.
DEFAULT_EXPORT_LENGTH = 16
# Batch 1 would let torch.export specialise the batch axis to a constant.
EXPORT_BATCH = 2
# The graph runs at any length, so a longer trace buys nothing but time and memory (the
# check runs at 2L + 3).
MAX_EXPORT_LENGTH = 4096


@dataclass(frozen=True)
class InputSampler:
    """What one time step of the model's input looks like.

    ``feature_shape`` is ``()`` for token ids (``vocab_size`` set, integer ``dtype``) and
    ``(d_input,)`` for float features.
    """

    feature_shape: tuple[int, ...]
    dtype: torch.dtype
    vocab_size: int | None = None

    @property
    def is_tokens(self) -> bool:
        return self.vocab_size is not None

    def sequence(self, batch: int, length: int, generator: torch.Generator) -> Tensor:
        """Random inputs (batch, length, *feature_shape)."""
        shape = (batch, length, *self.feature_shape)
        if self.vocab_size is not None:
            return torch.randint(0, self.vocab_size, shape, generator=generator, dtype=self.dtype)
        return torch.randn(shape, generator=generator, dtype=self.dtype)


def _vocab_size(model: nn.Module, example: Tensor | None) -> int:
    spec = getattr(model, "spec", None)
    if getattr(spec, "vocab_size", None) is not None:
        return int(spec.vocab_size)
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Embedding):
        return int(encoder.num_embeddings)
    if example is not None and example.numel():
        return int(example.max()) + 1
    raise ExportError("cannot tell the vocabulary size of a token model; give example_inputs")


def sampler_for(model: nn.Module, example_inputs: Tensor | tuple | None) -> InputSampler:
    """The input format of ``model``: from ``example_inputs`` when given, else ``model.spec``."""
    if isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) != 1:
            raise ExportError(f"export needs one input tensor, got {len(example_inputs)}")
        example_inputs = example_inputs[0]
    if example_inputs is not None:
        if not isinstance(example_inputs, Tensor) or example_inputs.dim() < 2:
            raise ExportError("example_inputs must be a tensor (batch, length[, features])")
        if example_inputs.is_complex():
            raise ExportError("ONNX graphs take real inputs; got a complex example input")
        feature = tuple(int(d) for d in example_inputs.shape[2:])
        if example_inputs.is_floating_point():
            return InputSampler(feature, example_inputs.dtype)
        return InputSampler(feature, example_inputs.dtype, _vocab_size(model, example_inputs))
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError("example_inputs is required for a model without a .spec")
    if spec.vocab_size is not None:
        return InputSampler((), torch.int64, int(spec.vocab_size))
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    return InputSampler((int(spec.d_input),), dtype)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a parameter-free module)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def export_example(sampler: InputSampler, length: int) -> Tensor:
    """A (EXPORT_BATCH, length, ...) example for tracing (fixed seed: exports are reproducible)."""
    if not isinstance(length, int) or isinstance(length, bool) or not (
            2 <= length <= MAX_EXPORT_LENGTH):
        # Length 1 would let torch.export specialise the time axis to a constant.
        raise ExportError(f"export length must be an int in [2, {MAX_EXPORT_LENGTH}], "
                          f"got {length!r}")
    return sampler.sequence(EXPORT_BATCH, length, torch.Generator().manual_seed(0))
