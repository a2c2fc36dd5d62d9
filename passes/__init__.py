"""The concrete passes of ssmcompile, one per module, and the default pipeline.

The core (``ssmcompile/``) names none of them: ``default_registry()`` is the value handed to
``parse_pipeline``; ``default_pipeline`` is the one definition of the pipeline ``reduce``, the
CLI and the trainer run.
"""

from __future__ import annotations

from ssmcompile.compiler import ModulePass, PassRegistry, RankPolicy, extension_passes

from .balanced_truncation import BalancedTruncation
from .hankel_analysis import HankelAnalysis
from .verify import Verify

BUILTIN_PASSES = (HankelAnalysis, BalancedTruncation, Verify)


def default_registry() -> PassRegistry:
    """Our passes plus third-party ones (``register_pass`` or the ``ssmcompile.passes`` entry
    point group)."""
    return PassRegistry.of(*BUILTIN_PASSES, *extension_passes())


def default_pipeline(policy: RankPolicy | None, *, verify: bool = True, hinf: bool = False,
                     probe: int = 0, output: bool = False) -> list[ModulePass]:
    """analysis → truncation by ``policy`` → verification (``policy=None``: analysis only);
    ``hinf``, ``probe`` and ``output`` are the verify pass's options."""
    pipeline: list[ModulePass] = [HankelAnalysis()]
    if policy is not None:
        pipeline.append(BalancedTruncation(policy))
        if verify:
            pipeline.append(Verify(hinf=hinf, probe=probe, output=output))
    return pipeline


def default_pipeline_text(policy: RankPolicy | None, **options) -> str:
    """:func:`default_pipeline` as a pipeline string (what configs and checkpoints store)."""
    return ",".join(p.spec() for p in default_pipeline(policy, **options))


__all__ = ["HankelAnalysis", "BalancedTruncation", "Verify", "BUILTIN_PASSES",
           "default_registry", "default_pipeline", "default_pipeline_text"]
