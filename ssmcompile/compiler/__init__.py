"""The compiler core: capture → match → (passes) → report. Concrete passes live in ``passes/``."""

from .analysis import (
    SUGGESTED_TAUS,
    analyse_block,
    block_inputs,
    is_calibrated,
    is_certified,
    l2_gain_error,
    replace_module,
    rewrite_block,
)
from .canonical import CanonicalAdapter, CanonicalSSM
from .capture import Capture, SSMTracer, block_dependencies, block_order, capture, is_scan_node
from .match import DEFAULT_RULES, MatchRule, RegisteredLayerRule, ScanCallRule, match_blocks
from .pass_manager import (
    ModulePass,
    PassManager,
    PassResult,
    parse_pipeline,
    register_pass,
    registered_passes,
)
from .policy import RankPolicy
from .probe import ProbedScanAdapter, probe_system
from .report import BlockRow, Report, build_report
from .state import (
    META_KEY,
    Block,
    BlockAnalysis,
    BlockVerification,
    CompileState,
    MatchFailure,
    RankDecision,
)

__all__ = [
    "SUGGESTED_TAUS", "analyse_block", "block_inputs", "is_calibrated", "is_certified",
    "l2_gain_error", "replace_module",
    "rewrite_block", "CanonicalAdapter", "CanonicalSSM", "Capture", "SSMTracer",
    "block_dependencies", "block_order", "capture", "is_scan_node", "DEFAULT_RULES", "MatchRule",
    "RegisteredLayerRule", "ScanCallRule", "match_blocks", "ModulePass", "PassManager",
    "PassResult", "parse_pipeline", "register_pass", "registered_passes", "RankPolicy",
    "ProbedScanAdapter", "probe_system", "BlockRow", "Report", "build_report", "META_KEY",
    "Block", "BlockAnalysis", "BlockVerification", "CompileState", "MatchFailure",
    "RankDecision",
]
