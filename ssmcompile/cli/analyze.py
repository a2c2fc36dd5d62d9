"""``ssmcompile analyze CKPT``: Hankel singular values and suggested ranks of every block.

``--json`` prints one object ``{"checkpoint", "builder", "probe", "blocks": [{"name", "kind",
"state_dim", "hsv", "sigma_max", "sigma_min", "decay", "energy", "suggested"}], "failures"}``;
``hsv`` is descending (flattened over channels for multi-SISO layers). Keep this shape stable.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from . import _common

NAME = "analyze"
HELP = "Hankel singular values, energy and suggested ranks of every SSM block"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="write every block's spectrum (log scale) to this PNG")
    parser.add_argument("--explain", action="store_true",
                        help="say why candidate modules did not match")
    _common.add_probe_arguments(parser)


def energy_ranks(n: int) -> list[int]:
    """The ranks the energy table reports: 1, n/8, n/4, n/2, 3n/4 (distinct, in 1..n)."""
    return sorted({max(1, min(n, k)) for k in (1, n // 8, n // 4, n // 2, (3 * n) // 4)})


def analyse_checkpoint(path: Path, probe_length: int, seed: int, quiet: bool = True):
    """``(meta, report, analyses)`` for the checkpoint at ``path``."""
    import passes

    from ..api import run_pipeline
    from ..io import get_builder, load_checkpoint, read_checkpoint_meta
    from ..io.builders import call_builder

    _common.check_probe(probe_length, seed)
    with _common.progress(quiet, 2, "analyze") as advance:
        advance("loading")
        meta = read_checkpoint_meta(path)
        dims = call_builder("invalid spec", get_builder(meta.builder).state_dims, meta.spec)
        _common.check_probe_memory(meta.spec, dims, probe_length)
        model, meta = load_checkpoint(path)
        x = _common.probe_input(meta.spec, probe_length, seed)
        if x.is_floating_point():
            x = x.to(_common.model_dtype(model))
        advance("hankel analysis")
        _, report, state = run_pipeline(model, x, passes.default_pipeline(None))
    return meta, report, state.analyses


def block_summaries(report, analyses) -> list[dict[str, Any]]:
    out = []
    for row in report.blocks:
        a = analyses.get(row.name)
        if a is None:
            continue
        hsv = list(row.hsv)
        n = a.state_dim
        energy = [{"rank": r, "kept": float(a.energy[r - 1])} for r in energy_ranks(n)]
        out.append({
            "name": row.name, "kind": row.kind, "state_dim": n, "hsv": hsv,
            "sigma_max": hsv[0], "sigma_min": hsv[-1],
            "decay": hsv[-1] / hsv[0] if hsv[0] > 0 else 0.0,
            "energy": energy,
            "suggested": [{"tau": t, "rank": r} for t, r in a.suggested],
        })
    return out


def render_text(path: Path, meta, blocks: list[dict[str, Any]]) -> str:
    lines = [f"checkpoint: {path}   builder: {meta.builder}   blocks: {len(blocks)}"]
    for b in blocks:
        lines.append("")
        lines.append(f"{b['name']}  ({b['kind']}, n = {b['state_dim']})")
        lines.append(f"  sigma_1 = {b['sigma_max']:.4e}   sigma_n = {b['sigma_min']:.4e}   "
                     f"sigma_n/sigma_1 = {b['decay']:.3e}")
        lines.append("  energy kept: " + "  ".join(
            f"r={e['rank']}: {100 * e['kept']:.2f}%" for e in b["energy"]))
        lines.append("  suggested ranks: " + "  ".join(
            f"tau={s['tau']:g} -> {s['rank']}" for s in b["suggested"]))
    if not blocks:
        lines.append("no state-space blocks found (try --explain)")
    return "\n".join(lines)


def plot_spectra(blocks: list[dict[str, Any]], out: Path) -> Path:
    """Write a log-scale plot of every block's σ_i (index on x) to ``out``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..io import write_bytes_atomic

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for b in blocks:
        hsv = [max(s, 1e-300) for s in b["hsv"]]  # log axes cannot show exact zeros
        ax.semilogy(range(1, len(hsv) + 1), hsv, marker=".", label=f"{b['name']} ({b['kind']})")
    ax.set_xlabel("index i")
    ax.set_ylabel("Hankel singular value σ_i")
    ax.set_title("Hankel singular values per block")
    if blocks:
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return write_bytes_atomic(out, buf.getvalue())


def run(args: argparse.Namespace) -> int:
    from ..io.atomic import check_not_input, check_output_path

    _common.check_probe(args.probe_length, args.seed)
    if args.plot is not None:  # fail before the work, not after
        check_output_path(args.plot)
        check_not_input(args.plot, [args.checkpoint], "plot")
    meta, report, analyses = analyse_checkpoint(args.checkpoint, args.probe_length, args.seed,
                                                getattr(args, "quiet", False))
    blocks = block_summaries(report, analyses)
    if args.plot is not None:
        plot_spectra(blocks, args.plot)
    if args.json:
        print(json.dumps({
            "checkpoint": str(args.checkpoint), "builder": meta.builder,
            "probe": {"length": args.probe_length, "seed": args.seed},
            "blocks": blocks,
            "failures": [{"name": n, "rule": r, "reason": why} for n, r, why in report.failures],
        }))
    else:
        print(render_text(args.checkpoint, meta, blocks))
        if args.plot is not None:
            print(f"wrote {args.plot}")
    if args.explain and not args.json:
        print(report.explain())
    return 0


def main(argv: list[str] | None = None) -> int:
    return _common.standalone_main(NAME, HELP, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
