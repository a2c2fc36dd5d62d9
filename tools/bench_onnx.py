"""onnxruntime latency of a full vs a reduced deep SSM: per sequence and per streamed step.

    .venv/bin/python tools/bench_onnx.py                       # LRU, 4 blocks, H=64, n 256 → 16
    .venv/bin/python tools/bench_onnx.py --length 256 --repeats 3 --steps 64   # quick run

The reduced model comes from ``ssmcompile.api.reduce(model, x, rank=SMALL)`` (balanced
truncation of the full one; ``verify=False`` to keep the tool fast — the tests verify). Both are
exported with ``export_onnx(..., check=True)`` (sequence and step graphs) and timed in
onnxruntime (CPUExecutionProvider) with ``--threads`` intra-op threads (torch uses the same count
for the eager reference line). Prints medians, the full/reduced ratios, the thread count and the
providers actually used.
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
from ssmcompile.export import SessionOptions, create_session, export_onnx, state_layout  # noqa: E402
from ssmcompile.layers import ModelSpec, build_model  # noqa: E402


def median_seconds(fn, repeats: int, warmup: int) -> float:
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(model, name: str, args, workdir: Path) -> dict[str, float]:
    opts = SessionOptions(threads=args.threads)
    seq_path, step_path = workdir / f"{name}.onnx", workdir / f"{name}_step.onnx"
    t0 = time.perf_counter()
    seq = export_onnx(model, seq_path, check=True)
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
    seq_s = median_seconds(lambda: session.run(None, feed), args.repeats, 1)
    with torch.no_grad():
        torch_s = median_seconds(lambda: model(u), args.repeats, 1)

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

    step_s = median_seconds(stream, args.repeats, 1) / steps.shape[1]
    providers = ",".join(session.get_providers())
    return {"seq": seq_s, "torch": torch_s, "step": step_s, "providers": providers}


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
        f"threads={args.threads} layer={args.layer} blocks={args.blocks} H={args.d_model} "
        f"L={args.length} batch={args.batch}; reduce n={large}->{small} took "
        f"{time.perf_counter() - t0:.1f}s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        res = {
            name: bench_model(model, name, args, Path(tmp))
            for name, model in (("full", full), ("reduced", reduced))
        }
    for name in ("full", "reduced"):
        r = res[name]
        print(
            f"[threads={args.threads}] {name:>7} n={large if name == 'full' else small:>4}: "
            f"onnxruntime sequence L={args.length} {r['seq'] * 1e3:8.2f} ms | "
            f"per streamed step {r['step'] * 1e6:8.1f} us | torch eager sequence "
            f"{r['torch'] * 1e3:8.2f} ms | providers {r['providers']}"
        )
    f, s = res["full"], res["reduced"]
    print(
        f"[threads={args.threads}] ratio full/reduced: sequence {f['seq'] / s['seq']:.2f}x, "
        f"step {f['step'] / s['step']:.2f}x, torch eager sequence {f['torch'] / s['torch']:.2f}x; "
        f"onnxruntime vs torch eager (full sequence): {f['torch'] / f['seq']:.2f}x"
    )


if __name__ == "__main__":
    main()
