"""When nothing matched: name the modules that look like state-space layers, and why.

Heuristics only (they never decide a match): parameters named like an SSM's (A, B, C, D,
Lambda, log_dt, A_log, nu_log, ...), a forward that loops over time, or one that convolves with
an FFT. They turn "no block found" into a pointer at the module to register.
"""

from __future__ import annotations

import inspect
import re
import textwrap

from torch import nn

_PARAM = re.compile(r"^(A|B|C|D|Lambda|lambda|lam\w*|log_?dt|dt\w*|A_log|log_A\w*|nu_log|"
                    r"theta_log|gamma_log|[ABC]_(re|im|real|imag)|Lambda_(re|im))$")
_LOOP = re.compile(r"for\s+\w+\s+in\s+range\(\s*[\w.]*(L|len|length|seq|size\(1\)|shape\[1\])")
_FFT = re.compile(r"\bfft\.(r?fft|irfft|ifft)|\btorch\.fft\b")
_MAX_LISTED = 8


def _reasons(module: nn.Module) -> list[str]:
    reasons = []
    names = [n for n, _ in module.named_parameters(recurse=False)]
    hits = [n for n in names if _PARAM.match(n)]
    if len(hits) >= 2:
        reasons.append("parameters " + ", ".join(hits[:4]))
    try:
        source = textwrap.dedent(inspect.getsource(type(module).forward))
    except (OSError, TypeError):
        source = ""
    if _LOOP.search(source):
        reasons.append("a loop over time in forward")
    if _FFT.search(source):
        reasons.append("an FFT convolution in forward")
    return reasons


def find_suspects(model: nn.Module) -> list[tuple[str, str, str]]:
    """(qualified name, class name, why it looks like an SSM) for each suspicious module,
    skipping torch's own layers."""
    out = []
    for name, module in model.named_modules():
        if type(module).__module__.startswith("torch."):
            continue
        reasons = _reasons(module)
        if reasons:
            out.append((name or "<model>", type(module).__name__, "; ".join(reasons)))
    return out


def no_block_message(model: nn.Module, state=None) -> str:
    """The one-line error for a model in which no state-space block was found."""
    suspects = find_suspects(model)
    head = f"no state-space block found in {type(model).__name__}"
    if suspects:
        listed = ", ".join(f"{n} ({c}: {why})" for n, c, why in suspects[:_MAX_LISTED])
        more = f" and {len(suspects) - _MAX_LISTED} more" if len(suspects) > _MAX_LISTED else ""
        head += f"; modules that look like SSMs: {listed}{more}"
    failures = getattr(state, "failures", None)
    if failures:
        head += f"; {len(failures)} candidate(s) rejected (see Report.explain())"
    return (head + "; register an adapter with ssmcompile.register_block(LayerClass, adapter) "
            "or call ssmcompile.ops' scans in forward")



__all__ = ["find_suspects", "no_block_message"]
