"""One exception hierarchy for everything ssmcompile raises on purpose.

User-facing errors carry a one-line message; the CLI prints ``str(err)`` and exits non-zero,
never a traceback.
"""

from __future__ import annotations

MESSAGE_LIMIT = 400  # characters of a user-facing message; file contents can be megabytes


def safe_text(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line, safe to print: control and non-printable characters (terminal
    escapes, lone surrogates) are escaped, and anything past ``limit`` characters is cut and
    counted, because strings echoed from a file may be megabytes long or hostile."""
    full = str(text)
    # only the head can be printed; walking a megabyte character by character would be slow
    raw = " ".join(full[: 4 * limit + 64].split())
    out = []
    for ch in raw:
        code = ord(ch)
        if ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    line = "".join(out)
    if len(line) > limit or len(full) > 4 * limit + 64:
        shown = line[:limit]
        more = max(len(full) - len(shown), 1)
        line = f"{shown}... [{more} more characters]"
    return line


class SSMCompileError(Exception):
    """Base class of every error ssmcompile raises deliberately."""


class ShapeError(SSMCompileError, ValueError):
    """Inputs have inconsistent or unsupported shapes."""


class UnstableSystemError(SSMCompileError, ValueError):
    """A system has a pole on or outside the unit circle (|λ| ≥ 1) or is not finite."""


class RankError(SSMCompileError, ValueError):
    """A requested rank / energy threshold / budget is out of range."""


class ConditioningError(SSMCompileError, ArithmeticError):
    """A transform needed by the rewrite is too ill-conditioned to be trusted."""


class MatchError(SSMCompileError):
    """A module could not be matched as a state-space block (the message says why)."""


class PassError(SSMCompileError):
    """A pass or pipeline string is unknown or misconfigured."""


class VerificationError(SSMCompileError):
    """A rewritten block breaks its certified error bound."""


class CheckpointError(SSMCompileError):
    """A checkpoint is missing, malformed, unsafe or from an unsupported format version."""


__all__ = [
    "MESSAGE_LIMIT",
    "safe_text",
    "SSMCompileError",
    "ShapeError",
    "UnstableSystemError",
    "RankError",
    "ConditioningError",
    "MatchError",
    "PassError",
    "VerificationError",
    "CheckpointError",
]
