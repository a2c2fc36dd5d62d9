"""``ssmcompile reduce CKPT``: balanced truncation of every block, verified, to a new checkpoint.

The output keeps ``initial_spec`` and appends one ReductionEvent per reduced block to the
history, so ``load_checkpoint`` can replay how the architecture got its size.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from . import _common

NAME = "reduce"
HELP = "balanced-truncate every SSM block and write a smaller, verified checkpoint"


@dataclass(frozen=True)
class ReduceOptions:
    """The rank rule (exactly one of rank/tau/budget/fraction, or only per-block ranks)."""

    rank: int | None = None
    tau: float | None = None
    budget: float | None = None
    fraction: float | None = None
    overrides: tuple[tuple[str, int], ...] = ()
    hinf: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--rank", type=int, help="keep R states in every block")
    rule.add_argument("--tau", type=float, help="energy rule: keep 1 - TAU of Σσ per block")
    rule.add_argument("--budget", type=float, help="keep this fraction of all states overall")
    rule.add_argument("--fraction", type=float, help="keep this fraction of each block")
    parser.add_argument("--block", action="append", default=[], metavar="NAME=R",
                        help="rank for one block (repeatable), e.g. blocks.0.ssm=8")
    parser.add_argument("-o", "--output", type=Path,
                        help="output file (default: <input>.reduced.safetensors)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--hinf", action="store_true",
                        help="also check each block's H∞ error on a frequency grid (slower)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _common.add_probe_arguments(parser)


def parse_block_ranks(items: list[str]) -> tuple[tuple[str, int], ...]:
    """``["blocks.0.ssm=8", ...]`` → ``(("blocks.0.ssm", 8), ...)``; RankError if malformed."""
    from ..errors import RankError

    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise RankError(f"--block expects NAME=R, got {item!r}")
        try:
            out[name] = int(value)
        except ValueError:
            raise RankError(f"--block {item!r}: rank {value!r} is not an integer") from None
    return tuple(out.items())


def options_from_args(args: argparse.Namespace) -> ReduceOptions:
    """Validate the numbers that do not depend on the checkpoint."""
    from ..errors import RankError

    opts = ReduceOptions(rank=args.rank, tau=args.tau, budget=args.budget,
                         fraction=args.fraction, overrides=parse_block_ranks(args.block),
                         hinf=args.hinf)
    if all(v is None for v in (opts.rank, opts.tau, opts.budget, opts.fraction)) \
            and not opts.overrides:
        raise RankError("choose one of --rank, --tau, --budget, --fraction (or give --block)")
    if opts.tau is not None and not 0.0 < opts.tau < 1.0:
        raise RankError(f"--tau must be in (0, 1), got {opts.tau:g}")
    for key in ("budget", "fraction"):
        v = getattr(opts, key)
        if v is not None and not 0.0 < v <= 1.0:
            raise RankError(f"--{key} must be in (0, 1], got {v:g}")
    if opts.rank is not None and opts.rank <= 0:
        raise RankError(f"--rank must be >= 1, got {opts.rank}")
    return opts


def check_ranks(opts: ReduceOptions, dims: dict[str, int]) -> None:
    """Fixed ranks must satisfy 1 <= r < n for every block they apply to."""
    from ..errors import RankError

    for name, r in opts.overrides:
        if name not in dims:
            raise RankError(f"--block: no block named {name!r} (blocks: {', '.join(dims)})")
        if not 0 < r < dims[name]:
            raise RankError(f"--block {name}={r}: rank must be in 1..{dims[name] - 1} "
                            f"(block has n={dims[name]})")
    if opts.rank is not None:
        overridden = dict(opts.overrides)
        for name, n in dims.items():
            if name not in overridden and opts.rank >= n:
                raise RankError(f"--rank {opts.rank} is not below the state dim of block "
                                f"{name} (n={n})")


def default_output(src: Path) -> Path:
    """``model.safetensors`` → ``model.reduced.safetensors`` next to the input."""
    stem = src.name[: -len(".safetensors")] if src.name.endswith(".safetensors") else src.name
    return src.with_name(f"{stem}.reduced.safetensors")


def check_output(src: Path, out: Path, force: bool) -> None:
    from ..errors import CheckpointError
    from ..io.atomic import check_output_path

    check_output_path(out)
    if out.resolve() == src.resolve() or (out.exists() and src.exists() and out.samefile(src)):
        raise CheckpointError(f"refusing to overwrite the input checkpoint {src}")
    if out.exists() and not force:
        raise CheckpointError(f"output exists: {out} (use --force to overwrite)")


def reduce_checkpoint(src: Path, out: Path, opts: ReduceOptions, probe_length: int = 64,
                      seed: int = 0, quiet: bool = True):
    """Load, reduce, verify, write ``out``. Returns ``(report, events)``; nothing is written
    (and ``events`` is empty) when no block gets smaller."""
    from ..api import run_pipeline
    from ..compiler import registered_passes
    from ..io import (
        ReductionEvent,
        get_builder,
        load_checkpoint,
        read_checkpoint_meta,
        save_checkpoint,
    )
    from ..io.builders import call_builder

    meta = read_checkpoint_meta(src)
    builder = get_builder(meta.builder)
    check_ranks(opts, call_builder("invalid spec", builder.state_dims, meta.spec))
    passes = registered_passes()
    pipeline = [
        passes["hankel-analysis"](),
        passes["balanced-truncation"](rank=opts.rank, tau=opts.tau, budget=opts.budget,
                                      fraction=opts.fraction, overrides=opts.overrides),
        passes["verify"](hinf=opts.hinf),
    ]
    with _common.progress(quiet, 3, "reduce") as advance:
        advance("loading")
        model, meta = load_checkpoint(src)
        x = _common.probe_input(meta.spec, probe_length, seed)
        if x.is_floating_point():
            x = x.to(_common.model_dtype(model))
        advance("analyse, truncate, verify")
        reduced, report, state = run_pipeline(model, x, pipeline)
        step = max([_checkpoint_step(meta.extra)] + [e.step for e in meta.history])
        events = []
        spec = meta.spec
        for b in state.blocks:  # in model order, so the history reads top to bottom
            result = state.rewrites.get(b.name)
            if result is None:
                continue
            kept = result.hsv[..., : result.rank].flatten().tolist()
            events.append(ReductionEvent(step=step, block=b.name,
                                         n=state.analyses[b.name].state_dim, r=result.rank,
                                         hsv_kept=tuple(kept), bound=float(result.bound.max())))
            spec = call_builder("cannot resize spec", builder.resize, spec, b.name, result.rank)
        if events:
            advance("writing")
            save_checkpoint(out, reduced, builder=meta.builder, spec=spec,
                            initial_spec=meta.initial_spec, history=meta.history + tuple(events),
                            extra=meta.extra)
    return report, tuple(events)


def _checkpoint_step(extra: dict[str, str]) -> int:
    try:
        return max(0, int(extra.get("step", "0")))
    except ValueError:
        return 0


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    out = args.output if args.output is not None else default_output(args.checkpoint)
    check_output(args.checkpoint, out, args.force)
    report, events = reduce_checkpoint(args.checkpoint, out, opts, args.probe_length, args.seed,
                                       getattr(args, "quiet", False))
    if args.json:
        print(json.dumps({"output": str(out) if events else None, "report": report.to_dict()}))
    else:
        print(report)
        print(f"wrote {out}" if events else "no block got smaller; nothing written")
    return 0


def main(argv: list[str] | None = None) -> int:
    return _common.standalone_main(NAME, HELP, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
