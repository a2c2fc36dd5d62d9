"""onnxruntime latency of a full vs a reduced deep SSM: per sequence and per streamed step.

    .venv/bin/python tools/bench_onnx.py                       # LRU, 4 blocks, H=64, n 256 → 16
    .venv/bin/python tools/bench_onnx.py --chunk 1             # the per-step Scan body
    .venv/bin/python tools/bench_onnx.py --length 256 --repeats 3 --steps 64   # quick run

The reduced model comes from ``ssmcompile.api.reduce(model, x, rank=SMALL)`` (balanced
truncation of the full one; ``verify=False`` to keep the tool fast — the tests verify). Both are
exported with ``export_onnx(..., check=True)`` (sequence and step graphs) and timed in
onnxruntime (CPUExecutionProvider) with ``--threads`` intra-op threads (torch uses the same count
for the eager reference line). ``--chunk``: time steps per ONNX Scan iteration in the sequence
graph (``export_onnx(scan_chunk=...)``; 1 = one step per iteration). Prints medians (and the
best of the repeats, as this 2-core VM is shared and noisy), the full/reduced ratios, the thread
count, the chunk and the providers actually used.

Choosing the default chunk (``onnx_scan.DEFAULT_SCAN_CHUNK`` = 32) and the per-layer caps
(``DIAGONAL_MAX_CHUNK_WIDTH`` = 4096, ``DENSE_MAX_CHUNK_WIDTH`` = 256): one block, H = 64,
L = 1024, 1 thread, best of 9 interleaved runs, caps lifted, ms
(eager torch | per step | T = 16 | T = 32; dense also T = 4):

    LRU n=16    batch 1:  4.5 | 10.1 | 1.67 | 1.26        batch 8:  9.4 | 16.3 |  6.6 |  6.2
    LRU n=64    batch 1:  3.4 |  5.6 | 1.99 | 1.96        batch 8: 12.6 | 16.7 | 12.1 | 12.1
    LRU n=256   batch 1:  5.7 |  7.9 | 4.95 | 5.44        batch 8: 54.2 | 34.2 | 44.8 | 45.3
    dense n=16  batch 1:  2.9 |  2.4 | 0.99 | 1.03 (T=4 1.25)   batch 8:  9.7 | 6.8 | 6.0 | 6.7
    dense n=64  batch 1:  3.7 |  2.9 | 2.83 | 5.02 (T=4 2.00)   batch 8: 16.8 | 13.4 | 21.3 | 37.5
    dense n=128 batch 1: 11.5 |  6.3 | 11.6 | 20.8 (T=4 5.90)   batch 8: 22.5 | 14.4 | 64.1 | 111

Large diagonal layers at batch > 1 are the one case where the per-step body (``--chunk 1``)
stays faster: the chunk's matrix work and layout copies grow with batch·n while the per-step
iteration overhead is paid once per step for the whole batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssmcompile.api import reduce  # noqa: E402
from ssmcompile.export import (  # noqa: E402
    DEFAULT_SCAN_CHUNK,
    SessionOptions,
    create_session,
    export_onnx,
    state_layout,
)
from ssmcompile.layers import ModelSpec, build_model  # noqa: E402


def timed_seconds(fn, repeats: int, warmup: int) -> tuple[float, float]:
    """(median, best) wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def bench_model(model, name: str, args, workdir: Path) -> dict[str, float]:
    opts = SessionOptions(threads=args.threads)
    seq_path, step_path = workdir / f"{name}.onnx", workdir / f"{name}_step.onnx"
    t0 = time.perf_counter()
    seq = export_onnx(model, seq_path, check=True, scan_chunk=args.chunk)
    step = export_onnx(model, step_path, step=True, check=True)
    export_s = time.perf_counter() - t0
    print(
        f"  {name}: state_dims={model.state_dims} exported in {export_s:.1f}s "
        f"(parity max|err| seq {seq.parity.max_abs_err:.1e}, step {step.parity.max_abs_err:.1e}; "
        f"{seq.stats.scan_nodes} Scan nodes)"
    )
    g = torch.Generator().manual_seed(0)
    u = torch.randn(args.batch, args.length, args.d_input, generator=g)
    session = create_session(seq_path, opts)
    feed = {"u": u.numpy()}
    seq_s, seq_best = timed_seconds(lambda: session.run(None, feed), args.repeats, 1)
    with torch.no_grad():
        torch_s, torch_best = timed_seconds(lambda: model(u), args.repeats, 1)
        y_torch = model(u).numpy()
    seq_err = float(np.abs(session.run(None, feed)[0] - y_torch).max())

    layout = state_layout(model)
    step_session = create_session(step_path, opts)
    steps = u[:, : args.steps].numpy()
    zeros = {
        n: np.zeros((args.batch, *s), np.float32)
        for n, s in zip(layout.names, layout.shapes, strict=True)
    }

    def stream() -> None:
        state = dict(zeros)
        for k in range(steps.shape[1]):
            _, *new = step_session.run(None, {"u_k": steps[:, k], **state})
            state = dict(zip(layout.names, new, strict=True))

    step_s = timed_seconds(stream, args.repeats, 1)[0] / steps.shape[1]
    providers = ",".join(session.get_providers())
    return {
        "seq": seq_s,
        "seq_best": seq_best,
        "seq_err": seq_err,
        "torch": torch_s,
        "torch_best": torch_best,
        "step": step_s,
        "providers": providers,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layer", default="lru", choices=("lru", "s5", "s4d", "dense"))
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--d-input", type=int, default=8)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--states", type=int, nargs=2, default=(256, 16), metavar=("LARGE", "SMALL"))
    p.add_argument("--steps", type=int, default=256, help="streamed steps per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_SCAN_CHUNK,
        help=f"time steps per ONNX Scan iteration (1: per step; default {DEFAULT_SCAN_CHUNK})",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    large, small = args.states
    spec = ModelSpec(layer=args.layer, d_model=args.d_model, state_dims=(large,) * args.blocks,
                     d_output=10, d_input=args.d_input)  # fmt: skip
    full = build_model(spec).eval()
    t0 = time.perf_counter()
    reduced, _ = reduce(full, torch.randn(2, 256, args.d_input), rank=small, verify=False)
    reduced.eval()
    print(
        f"threads={args.threads} chunk={args.chunk} layer={args.layer} blocks={args.blocks} "
        f"H={args.d_model} L={args.length} batch={args.batch}; reduce n={large}->{small} took "
        f"{time.perf_counter() - t0:.1f}s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        res = {
            name: bench_model(model, name, args, Path(tmp))
            for name, model in (("full", full), ("reduced", reduced))
        }
    tag = f"[threads={args.threads} chunk={args.chunk}]"
    for name in ("full", "reduced"):
        r = res[name]
        print(
            f"{tag} {name:>7} n={large if name == 'full' else small:>4}: "
            f"onnxruntime sequence L={args.length} {r['seq'] * 1e3:8.2f} ms "
            f"(best {r['seq_best'] * 1e3:.2f}, max|err| {r['seq_err']:.1e}) | per streamed step "
            f"{r['step'] * 1e6:8.1f} us | torch eager sequence {r['torch'] * 1e3:8.2f} ms "
            f"(best {r['torch_best'] * 1e3:.2f}) | providers {r['providers']}"
        )
    f, s = res["full"], res["reduced"]
    print(
        f"{tag} ratio full/reduced: sequence {f['seq'] / s['seq']:.2f}x "
        f"(best {f['seq_best'] / s['seq_best']:.2f}x), step {f['step'] / s['step']:.2f}x, "
        f"torch eager sequence {f['torch'] / s['torch']:.2f}x; onnxruntime vs torch eager "
        f"(sequence): full {f['torch'] / f['seq']:.2f}x, reduced {s['torch'] / s['seq']:.2f}x"
    )


if __name__ == "__main__":
    main()
