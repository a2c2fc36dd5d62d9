"""Selective SSMs: Mamba blocks, the selective-scan op and their state-dimension reduction.

Importing this package registers ``torch.ops.ssmcompile.selective_scan``, the adapters for
:class:`Mamba1Block` / :class:`Mamba2Block` with the compiler core and the ``"selective-lm"``
checkpoint builder. The Hugging Face adapter
(:mod:`ssmcompile.selective.hf`) imports ``transformers`` only when used (extra ``[hf]``).
"""

from .adapters import (
    CalibrationOptions,
    Mamba1Adapter,
    Mamba2Adapter,
    index_importance,
    keep_indices,
    register_mamba_adapters,
    select_mamba1_states,
)
from .calibration import diagonal_decay_gramians, scalar_decay_gramians, surrogate_system
from .checkpoint import BUILDER_NAME, SELECTIVE_LM_BUILDER, register_selective_builder
from .lm import Corpus, LMConfig, SelectiveLM, stdlib_docstrings
from .mamba import Mamba1Block, Mamba1Config, Mamba2Block, Mamba2Config
from .scan import selective_scan, selective_scan_reference

register_mamba_adapters()
register_selective_builder()

__all__ = [
    "selective_scan",
    "selective_scan_reference",
    "Mamba1Block",
    "Mamba1Config",
    "Mamba2Block",
    "Mamba2Config",
    "CalibrationOptions",
    "Mamba1Adapter",
    "Mamba2Adapter",
    "index_importance",
    "keep_indices",
    "select_mamba1_states",
    "register_mamba_adapters",
    "scalar_decay_gramians",
    "diagonal_decay_gramians",
    "surrogate_system",
    "Corpus",
    "LMConfig",
    "SelectiveLM",
    "stdlib_docstrings",
    "BUILDER_NAME",
    "SELECTIVE_LM_BUILDER",
    "register_selective_builder",
]
