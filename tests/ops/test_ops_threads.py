"""The scan thread policy: scan threads apart from torch's, and the guard that runs a call site
on one thread where that measured faster."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.ops import _engine, threads


def test_policy_sets_and_restores_both_counts(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    with threads.thread_policy("scans", cores=2):
        assert torch.get_num_threads() == 1 and threads.scan_threads() == 2
    with threads.thread_policy("serial"):
        assert torch.get_num_threads() == 1 and threads.scan_threads() == 1
    assert torch.get_num_threads() == before
    assert threads.scan_threads() == before  # follows torch again
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.scan_threads() == 3
    with pytest.raises(ValueError, match="thread policy"):
        with threads.thread_policy("fast"):
            pass


def _run(g, key, serial_cost, parallel_cost, calls):
    modes = []
    for _ in range(calls):
        p = g.parallel(key)
        modes.append(p)
        g.record(key, p, parallel_cost if p else serial_cost)
    return modes


def test_guard_tries_both_then_keeps_the_faster_and_keeps_exploring():
    g = threads.ParallelGuard()
    modes = _run(g, "a", serial_cost=1.0, parallel_cost=2.0, calls=4 + 16 + 32 + 64 + 1)
    assert modes[:4] == [True, False, True, False]  # warm-up alternates
    later = modes[4:]
    explored = [i for i, p in enumerate(later) if p]
    assert len(explored) == 3  # gaps 16, 32, 64: each confirmation doubles the gap
    assert explored[1] - explored[0] == 32 and explored[2] - explored[1] == 64
    other = _run(g, "b", serial_cost=2.0, parallel_cost=1.0, calls=4 + 16 + 1)  # sites apart
    assert other[4:].count(False) == 1
    # the load changes: parallel becomes faster at "a"; the next exploration flips the choice
    after = _run(g, "a", serial_cost=1.0, parallel_cost=0.2, calls=200)
    first = after.index(True)
    assert first < threads.ParallelGuard.MAX_EXPLORE
    assert after[first + 1 : first + 16] == [True] * 15  # until the next (serial) exploration


def test_parallel_for_follows_the_guard(monkeypatch):
    monkeypatch.setattr(_engine, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(threads, "_override", 2)

    class Fixed(threads.ParallelGuard):
        def __init__(self, answer):
            super().__init__()
            self.answer, self.recorded = answer, []

        def parallel(self, key):
            return self.answer

        def record(self, key, parallel, seconds_per_work):
            self.recorded.append((parallel, seconds_per_work))

    for answer in (False, True):
        g = Fixed(answer)
        monkeypatch.setattr(_engine, "guard", g)
        calls = []
        _engine.parallel_for(lambda a, b, calls=calls: calls.append((a, b)), 10, 1 << 30)
        assert sorted(x for a, b in calls for x in range(a, b)) == list(range(10))
        assert (calls == [(0, 10)]) == (not answer)
        assert len(g.recorded) == 1 and g.recorded[0][0] == answer and g.recorded[0][1] > 0
