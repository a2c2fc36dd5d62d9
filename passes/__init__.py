"""The concrete passes of ssmcompile, one per module; importing this package registers them.

The core finds this package through the ``ssmcompile.passes`` entry point and never imports it
by name.
"""

from .balanced_truncation import BalancedTruncation
from .hankel_analysis import HankelAnalysis
from .verify import Verify

__all__ = ["HankelAnalysis", "BalancedTruncation", "Verify"]
