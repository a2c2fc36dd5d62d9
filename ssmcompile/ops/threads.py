"""How many threads the scan kernels use, apart from torch's own intra-op threads.

The policy (``thread_policy("scans")``, what the trainer uses): torch runs on 1 thread and the
scan kernels on every core this process may use. Why split them: torch's OpenMP regions are
split statically and spin at their barriers, so on a 2-core machine with another process busy
a training step on 2 torch threads ran up to 20x slower than on 1; the scan kernels hand out
work in chunks that threads take in turn (``_engine.parallel_for``), so a thread that gets no
core takes less work instead of holding everyone back, and their sums run in a fixed order, so
results do not depend on the thread count. Measured (``tools/bench_step.py``) it is never slower
than 1 thread and gains where the scans dominate a step; ``thread_policy("torch")`` gives torch
every core too, which pays only on an otherwise idle machine with matmul-heavy models.

``SSMCOMPILE_SCAN_THREADS`` (read on every call) or ``set_scan_threads`` fixes the scan threads;
by default they follow ``torch.get_num_threads()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV = "SSMCOMPILE_SCAN_THREADS"
POLICIES = ("scans", "torch", "serial")

_override: int | None = None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_scan_threads(n: int | None) -> None:
    """Fix the scan kernels' thread count (``None``: follow ``torch.get_num_threads()``)."""
    global _override
    if n is not None and n < 1:
        raise ValueError(f"scan threads must be ≥ 1, got {n}")
    _override = n


def scan_threads() -> int:
    """Threads a scan call may use now."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return max(1, int(env))
    return _override if _override is not None else torch.get_num_threads()


@contextmanager
def thread_policy(name: str = "scans", cores: int | None = None) -> Iterator[None]:
    """Run the block under a thread policy, restoring torch's and the scans' counts after.

    ``scans``: torch on 1 thread, scan kernels on ``cores`` (default: ``available_cores()``);
    ``torch``: both on ``cores``; ``serial``: both on 1.
    """
    if name not in POLICIES:
        raise ValueError(f"thread policy must be one of {', '.join(POLICIES)}; got {name!r}")
    cores = cores or available_cores()
    before = torch.get_num_threads(), _override
    torch_threads, scans = {"scans": (1, cores), "torch": (cores, cores), "serial": (1, 1)}[name]
    torch.set_num_threads(torch_threads)
    set_scan_threads(scans)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        set_scan_threads(before[1])
