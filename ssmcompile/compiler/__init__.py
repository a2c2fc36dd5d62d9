"""The compiler core: capture → match → (passes) → report. Concrete passes live in ``passes/``."""

from .analysis import (
    SUGGESTED_TAUS,
    SignalError,
    analyse_block,
    block_inputs,
    is_calibrated,
    is_certified,
    l2_gain_error,
    model_output_error,
    replace_module,
    rewrite_block,
    signal_error,
)
from .canonical import CanonicalAdapter, CanonicalSSM
from .capture import Capture, SSMTracer, block_dependencies, block_order, capture, is_scan_node
from .derive import prepare, rederive
from .lti_probe import IdentifiedLTI, LTIProbeAdapter, identify_lti
from .match import (
    DEFAULT_RULES,
    Candidate,
    LTIProbeRule,
    MatchContext,
    MatchRule,
    RegisteredLayerRule,
    ScanCallRule,
    match_blocks,
)
from .pass_manager import ModulePass, PassManager, PassResult, fingerprint
from .policy import RankPolicy
from .precision import at_precision, primary_output
from .probe import ProbedScanAdapter, probe_system
from .registry import PassRegistry, extension_passes, parse_pipeline, pipeline_text, register_pass
from .report import BlockRow, Report, build_report
from .state import (
    META_KEY,
    Block,
    BlockAnalysis,
    BlockRecord,
    BlockVerification,
    CompileState,
    MatchFailure,
    PassTiming,
    RankDecision,
    Truncation,
)

__all__ = [
    "SUGGESTED_TAUS", "analyse_block", "block_inputs", "is_calibrated", "is_certified",
    "l2_gain_error", "signal_error", "SignalError", "model_output_error", "replace_module",
    "rewrite_block", "CanonicalAdapter", "CanonicalSSM", "Capture", "SSMTracer",
    "block_dependencies", "block_order", "capture", "is_scan_node", "DEFAULT_RULES", "MatchRule",
    "RegisteredLayerRule", "ScanCallRule", "match_blocks", "LTIProbeRule",
    "Candidate", "MatchContext", "IdentifiedLTI", "LTIProbeAdapter", "identify_lti",
    "ModulePass", "PassManager",
    "PassResult", "parse_pipeline", "register_pass", "PassRegistry", "extension_passes",
    "pipeline_text", "fingerprint", "prepare", "rederive", "at_precision", "primary_output",
    "RankPolicy", "BlockRecord", "Truncation",
    "ProbedScanAdapter", "probe_system", "BlockRow", "Report", "build_report", "META_KEY",
    "Block", "BlockAnalysis", "BlockVerification", "CompileState", "MatchFailure",
    "RankDecision", "PassTiming",
]
