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
from dataclasses import dataclass, field

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


def set_scan_threads(n: int | None) -> int | None:
    """Fix the scan kernels' thread count (``None``: follow ``torch.get_num_threads()``);
    returns the previous setting, to restore."""
    global _override
    if n is not None and n < 1:
        raise ValueError(f"scan threads must be ≥ 1, got {n}")
    before, _override = _override, n
    return before


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


@dataclass
class _Site:
    calls: int = 0
    cost: list = field(default_factory=lambda: [0.0, 0.0])  # s/work: [serial, parallel]
    samples: list = field(default_factory=lambda: [0, 0])
    exploring: bool = False
    interval: int = 16  # calls between explorations
    next_explore: int = 0


class ParallelGuard:
    """Chooses, per call site, between one thread and several from measured times.

    Why: dynamic chunks bound the damage of a helper thread that gets no core, but not to zero:
    the last chunk a descheduled helper holds keeps the caller waiting for the rest of another
    process's time slice, and two threads of a memory-bound kernel share one memory bus (measured:
    2 scan threads ran a step 0.5-0.8x as fast as 1 on a 2-core machine whose other core ran a
    multi-threaded test suite). So each call site (the code of the lane function) keeps an
    exponential average of wall seconds per unit of work for each mode, tries each mode
    ``WARMUP`` times, then runs the faster one and explores the other now and then: an
    exploring call's time replaces that mode's average (it is the only fresh figure), so a
    change of load flips the choice within one exploration. Explorations start ``EXPLORE``
    calls apart; each one that confirms the choice doubles the gap (up to ``MAX_EXPLORE``),
    because every exploration runs the slower mode (at a 16-call gap that alone cost ~4 % of a
    step with a busy core). Results never depend on the choice (lanes are independent).
    """

    WARMUP = 2
    EXPLORE = 16
    MAX_EXPLORE = 256
    ALPHA = 0.3

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # False: always parallel (tests of the parallel path)
        self.sites: dict = {}

    def parallel(self, key) -> bool:
        """Whether the next call at ``key`` runs on several threads."""
        if not self.enabled:
            return True
        site = self.sites.setdefault(key, _Site())
        site.calls += 1
        serial_n, parallel_n = site.samples
        if min(site.samples) < self.WARMUP:
            site.exploring = False
            return parallel_n <= serial_n  # alternate, parallel first
        if site.next_explore == 0:
            site.interval, site.next_explore = self.EXPLORE, site.calls + self.EXPLORE
        site.exploring = site.calls >= site.next_explore
        return (site.cost[1] <= site.cost[0]) != site.exploring

    def record(self, key, parallel: bool, seconds_per_work: float) -> None:
        """One call at ``key`` in the given mode took ``seconds_per_work``."""
        site = self.sites.get(key)
        if site is None:
            return
        m = int(parallel)
        fresh = site.samples[m] == 0 or site.exploring
        site.cost[m] = seconds_per_work if fresh else (
            self.ALPHA * seconds_per_work + (1 - self.ALPHA) * site.cost[m])
        site.samples[m] += 1
        if site.exploring:
            confirmed = site.cost[m] > site.cost[1 - m]  # the explored mode is still slower
            site.interval = min(2 * site.interval, self.MAX_EXPLORE) if confirmed else self.EXPLORE
            site.next_explore = site.calls + site.interval
            site.exploring = False


guard = ParallelGuard()
