"""Which kernel runs the scans' eager bodies, and the torch side of the numba kernels.

Engines: ``numba`` (``_numba_scan``: CPU, natural layout, one pass) and ``torch`` (``_chunked``:
plain eager torch, any device). Default: numba for CPU tensors when it imports, torch otherwise.
``SSMCOMPILE_SCAN_ENGINE=torch|numba`` (read on every call) forces one; ``numba`` still falls back
to torch for non-CPU tensors or when numba is missing or broken (with one warning).

Threads: a call uses ``threads.scan_threads()`` threads (by default torch's count, so a caller
that sets torch to 1 gets 1; see ``threads`` for the policy), and runs serially below
``PARALLEL_MIN_WORK``. Lanes are split into chunks that the calling
thread and pool helpers *take in turn* from a shared counter,
with the GIL released inside the kernels. Why not numba's ``prange``: both its threading layers
split a loop statically into one piece per thread, so with another process on one core the piece
on that core finishes late and 2 threads were up to 1.3x slower than 1 (``omp`` also spin-waits and
loads a second OpenMP runtime beside torch's, and dies on fork; ``workqueue`` is not re-entrant);
here a helper that does not get a core simply takes fewer chunks, and waiting is on a condition
variable, never a spin. It also halves the cold compile (no parfor variants).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import _buffers
from .threads import guard, scan_threads

ENV = "SSMCOMPILE_SCAN_ENGINE"
# Below this many numbers (batch·length·n; ·n again for dense) a call runs serially: waking a
# helper costs ~70 µs here, the measured crossover (2 threads vs 1, idle) is ~1e5.
PARALLEL_MIN_WORK = 1 << 17
# Lanes go out in chunks of about this much work, at most MAX_CHUNKS_PER_THREAD per thread:
# small enough that a helper starved by a busy core holds little back, large enough that the
# ~10 µs dispatch per chunk stays negligible (16 chunks beat 4 by ~5-10 % at 50x784x256).
CHUNK_WORK = 1 << 17
MAX_CHUNKS_PER_THREAD = 8

_kernels = None  # the imported module, False after a failed import
_pool: ThreadPoolExecutor | None = None
_pool_key = (0, 0)  # (pid, workers): a forked child gets a new pool, its threads are gone
_pool_lock = threading.Lock()


def _load():
    global _kernels
    if _kernels is None:
        try:
            from . import _numba_scan

            _kernels = _numba_scan
        except Exception as err:  # noqa: BLE001 - any failure means: use the torch kernels
            warnings.warn(
                f"ssmcompile: numba scan kernels unavailable ({err!r}); using torch kernels",
                RuntimeWarning,
                stacklevel=3,
            )
            _kernels = False
    return _kernels or None


def engine_name() -> str:
    """The engine the environment asks for: ``numba`` (default) or ``torch``."""
    name = os.environ.get(ENV, "numba").strip().lower() or "numba"
    if name not in ("numba", "torch"):
        raise ValueError(f"{ENV} must be 'numba' or 'torch', got {name!r}")
    return name


def numba_kernels(*tensors: torch.Tensor):
    """The numba kernel module if it should run on ``tensors`` now, else None (use torch)."""
    if engine_name() != "numba" or any(t.device.type != "cpu" for t in tensors):
        return None
    return _load()


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy C-contiguous numpy view; copies only strided / negated / expanded inputs."""
    t = t.detach()
    if t.is_neg():
        t = t.resolve_neg()
    return t.contiguous().numpy()


def _fresh(like: np.ndarray) -> np.ndarray:
    """An output array shaped like ``like``: recycled from ``_buffers`` (no first-touch page
    faults), else a numpy allocation (numpy advises huge pages for large buffers; torch.empty's
    4 KiB pages fault ~4x longer)."""
    return _buffers.empty(like.shape, like.dtype)


def _helpers(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    with _pool_lock:
        if _pool_key[0] != os.getpid() or _pool_key[1] < workers:
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="ssmcompile-scan")
            _pool_key = (os.getpid(), workers)
        return _pool


def parallel_for(fn, total: int, work: int) -> None:
    """Run ``fn(t0, t1)`` over lanes 0..total-1 on up to ``scan_threads()`` threads, or on one
    where ``threads.guard`` measured that one is faster at this call site."""
    threads = min(scan_threads(), total)
    if threads < 2 or work < PARALLEL_MIN_WORK:
        fn(0, total)
        return
    key = getattr(fn, "__code__", fn)  # the call site: a lambda's code is the same every call
    start = time.perf_counter()
    if not guard.parallel(key):
        fn(0, total)
        guard.record(key, False, (time.perf_counter() - start) / work)
        return
    per_thread = min(MAX_CHUNKS_PER_THREAD, max(1, work // (threads * CHUNK_WORK)))
    chunks = min(total, threads * per_thread)
    bounds = [total * i // chunks for i in range(chunks + 1)]
    ticket = itertools.count()  # next() is atomic under the GIL

    def drain() -> None:
        while (i := next(ticket)) < chunks:
            fn(bounds[i], bounds[i + 1])

    pending = [_helpers(threads - 1).submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:
        for f in pending:
            f.result()
    guard.record(key, True, (time.perf_counter() - start) / work)


def _state_blocks(batch: int, n: int) -> int:
    """Blocks per batch row: >1 only when the batch cannot feed the threads by itself."""
    threads = scan_threads()
    return 1 if batch >= threads or n < 32 else min(-(-threads // batch), n // 16)


def diagonal_forward(k, lam_re, lam_im, bu_re, bu_im):
    """Shapes: λ parts (n,), bu parts (batch, L, n) → x parts, fresh (batch, L, n)."""
    lr, li, br, bi = map(_np, (lam_re, lam_im, bu_re, bu_im))
    xr, xi = _fresh(br), _fresh(bi)
    B, _, n = br.shape
    nblk = _state_blocks(B, n)
    parallel_for(lambda t0, t1: k.diag_fwd(lr, li, br, bi, xr, xi, t0, t1, nblk), B * nblk, br.size)
    return torch.from_numpy(xr), torch.from_numpy(xi)


def diagonal_backward(k, lam_re, lam_im, x_re, x_im, g_re, g_im):
    """Shapes: λ parts (n,), x and g parts (batch, L, n) → (∂λ_re, ∂λ_im (n,), a_re, a_im)."""
    lr, li, xr, xi, gr, gi = map(_np, (lam_re, lam_im, x_re, x_im, g_re, g_im))
    ar, ai = _fresh(gr), _fresh(gi)
    B, _, n = gr.shape
    pr, pi = np.empty((B, n)), np.empty((B, n))
    nblk = _state_blocks(B, n)

    def lanes(t0, t1):
        k.diag_bwd(lr, li, xr, xi, gr, gi, ar, ai, pr, pi, t0, t1, nblk)

    parallel_for(lanes, B * nblk, gr.size)
    dt = g_re.dtype
    g_lam = [torch.from_numpy(k.sum_rows(p)).to(dt) for p in (pr, pi)]
    return g_lam[0], g_lam[1], torch.from_numpy(ar), torch.from_numpy(ai)


def dense_recurrence(k, R: torch.Tensor, src: torch.Tensor, xs: torch.Tensor | None = None):
    """out_k = src_k + Rᵀ out_{k-1} (``xs`` None: the forward, R = Aᵀ) or the adjoint
    out_k = src_k + Rᵀ out_{k+1} with R = A and ∂A = Σ_k out_k xs_{k-1}ᵀ (``xs``: the states x).

    Shapes: ``R`` (n, n); ``src``, ``xs`` (batch, L, n) → fresh out (batch, L, n), and with
    ``xs`` also ∂A (n, n).
    """
    r, s = _np(R), _np(src)
    out = _fresh(s)
    B, _, n = s.shape
    groups = -(-B // k.GROUP)
    reverse = xs is not None
    x = _np(xs) if reverse else np.empty((0, 0, 0), s.dtype)
    dA = np.zeros((groups, n, n) if reverse else (0, 0, 0))
    parallel_for(lambda g0, g1: k.dense(r, s, out, x, dA, g0, g1, reverse), groups, s.size * n)
    if not reverse:
        return torch.from_numpy(out)
    return torch.from_numpy(k.sum_rows(dA)).to(src.dtype), torch.from_numpy(out)
