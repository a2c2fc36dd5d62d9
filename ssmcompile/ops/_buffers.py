"""Output buffers of the numba kernels, recycled once nothing references them any more.

Why: a fresh (batch, L, n) output comes from the OS as untouched pages, and the first write to
each page faults and zeroes it. Measured at 50×784×256 float32 (40 MB): writing a fresh array
took 4.2 ms, an already-touched one 1.3 ms, so the page faults were more than half of the
diagonal scan's forward, and they do not get faster with threads (the kernel serialises them).
A training step asks for the same shapes every step, so handing back an array the previous step
let go of removes them.

An array is free when only this pool holds it: the tensors made from it by ``torch.from_numpy``
keep it alive (through their storage, and so through every view and saved tensor), so it is never
handed out while any tensor still uses its memory. At most ``POOL_BYTES`` of free arrays are
kept, the oldest dropped first; ``empty_cache`` drops them all.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

POOL_BYTES = 1 << 30
# References to a free array while it is inspected: the pool's list entry, the local name and
# getrefcount's own argument. (Loops below index the list: enumerate's reused result tuple
# would hold one more.)
_FREE_REFS = 3

_pool: list[np.ndarray] = []
_lock = threading.Lock()


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, recycled when one of this shape and dtype is free."""
    dtype = np.dtype(dtype)
    with _lock:
        for i in range(len(_pool)):
            a = _pool[i]
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) == _FREE_REFS:
                _pool.append(_pool.pop(i))  # most recently used last
                return a
        a = None  # else the last array inspected would look in use to _trim
        out = np.empty(shape, dtype)
        _pool.append(out)
        _trim()
        return out


def _free_indices() -> list[int]:
    free = []
    for i in range(len(_pool)):
        a = _pool[i]
        if sys.getrefcount(a) == _FREE_REFS:
            free.append(i)
    return free


def _trim() -> None:
    free = _free_indices()
    excess = sum(_pool[i].nbytes for i in free) - POOL_BYTES
    drop = set()
    for i in free:  # oldest first
        if excess <= 0:
            break
        excess -= _pool[i].nbytes
        drop.add(i)
    _pool[:] = [_pool[i] for i in range(len(_pool)) if i not in drop]


def empty_cache() -> None:
    """Drop every free buffer (arrays still in use stay tracked)."""
    with _lock:
        free = set(_free_indices())
        _pool[:] = [_pool[i] for i in range(len(_pool)) if i not in free]


def pooled_bytes() -> tuple[int, int]:
    """(bytes in use by live tensors, bytes free in the pool)."""
    with _lock:
        free = set(_free_indices())
        sizes = [(i in free, _pool[i].nbytes) for i in range(len(_pool))]
    return sum(b for f, b in sizes if not f), sum(b for f, b in sizes if f)
