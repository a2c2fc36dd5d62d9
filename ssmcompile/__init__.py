"""ssmcompile: shrink state-space models while they train.

The public API is small and explicit:

- numerics: :func:`gramians`, :func:`hankel_singular_values`, :func:`balanced_truncation`,
  :class:`LTISystem`, :class:`TruncationResult`;
- the compiler: :func:`analyze`, :func:`reduce`, :func:`run_pipeline`, :class:`Report`;
- extension: :func:`register_block` (third-party layers), :func:`register_pass` (passes);
- :mod:`ssmcompile.ops` (scan custom ops), :mod:`ssmcompile.layers` (LRU, S5, S4D, dense LTI).
"""

from . import ops
from .adapters import register_block
from .api import analyze, reduce, run_pipeline
from .compiler import Report, register_pass
from .errors import SSMCompileError
from .numerics import (
    LTISystem,
    TruncationResult,
    balanced_truncation,
    gramians,
    hankel_singular_values,
)

__version__ = "0.1.0"

__all__ = [
    "ops",
    "register_block",
    "register_pass",
    "analyze",
    "reduce",
    "run_pipeline",
    "Report",
    "SSMCompileError",
    "LTISystem",
    "TruncationResult",
    "balanced_truncation",
    "gramians",
    "hankel_singular_values",
    "__version__",
]
