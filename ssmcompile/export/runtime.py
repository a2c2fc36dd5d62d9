"""onnxruntime sessions: provider choice, the CPU/GPU distribution clash, thread settings.

Install ONE of the two extras:

- ``pip install 'ssmcompile[onnx]'`` — ``onnxruntime`` (CPUExecutionProvider);
- ``pip install 'ssmcompile[gpu]'`` — ``onnxruntime-gpu`` (CUDAExecutionProvider, falling back
  to CPU). It needs matching CUDA/cuDNN libraries; without them it still imports, lists the
  CUDA provider, and silently runs on CPU — so we always report ``session.get_providers()``,
  the providers a session actually uses.

Both distributions install the same ``onnxruntime`` module: with both installed the last one
wins, ``pip check`` sees nothing, and uninstalling either breaks the other. We warn
(``RuntimeWarning``) when both are present; fix it by uninstalling both and reinstalling one.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass
from pathlib import Path

from .result import ExportError

DEVICES = ("cpu", "cuda")
_warned = False


def installed_onnxruntime_distributions() -> tuple[str, ...]:
    """Which of ``onnxruntime`` / ``onnxruntime-gpu`` are installed (by package metadata)."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def warn_if_both_distributions() -> bool:
    """Warn once per process when both distributions are installed; return whether they are."""
    global _warned
    both = len(installed_onnxruntime_distributions()) == 2
    if both and not _warned:
        _warned = True
        warnings.warn(
            "both onnxruntime and onnxruntime-gpu are installed; they overwrite the same "
            "'onnxruntime' module, so which one runs is undefined. Uninstall both and reinstall "
            "one (extra 'onnx' for CPU, 'gpu' for CUDA).",
            RuntimeWarning,
            stacklevel=2,
        )
    return both


@dataclass(frozen=True)
class SessionOptions:
    """``device``: ``"cpu"`` or ``"cuda"`` (CUDA only if onnxruntime offers it, else CPU with a
    warning); ``threads``: intra-op threads, ``None`` for onnxruntime's default."""

    device: str = "cpu"
    threads: int | None = None


def requested_providers(device: str) -> list[str]:
    """Providers to request for ``device``; CUDA is requested only when asked AND available."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ExportError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        warnings.warn(
            "CUDAExecutionProvider is not available in this onnxruntime; using CPU",
            RuntimeWarning,
            stacklevel=2,
        )
    return ["CPUExecutionProvider"]


def create_session(path: Path | str, options: SessionOptions | None = None):
    """An ``onnxruntime.InferenceSession`` for the ONNX file at ``path``."""
    options = options if options is not None else SessionOptions()
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            "onnxruntime is not installed; install the 'onnx' (CPU) or 'gpu' extra"
        ) from None
    warn_if_both_distributions()
    so = ort.SessionOptions()
    if options.threads is not None:
        so.intra_op_num_threads = int(options.threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: the CLI prints its own summary
    try:
        return ort.InferenceSession(
            str(path), sess_options=so, providers=requested_providers(options.device)
        )
    except ExportError:
        raise
    except Exception as err:
        line = (str(err).strip().splitlines() or [""])[0]
        raise ExportError(f"onnxruntime cannot load {path}: {line}") from None
