"""``ssmcompile reduce CKPT``: balanced truncation of every block, verified, to a new checkpoint.

The output keeps ``initial_spec`` and appends one ReductionEvent per reduced block to the
history, so ``load_checkpoint`` can replay how the architecture got its size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _common, _policy

NAME = "reduce"
HELP = "balanced-truncate every SSM block and write a smaller, verified checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    _policy.add_policy_arguments(parser)
    parser.add_argument("-o", "--output", type=Path,
                        help="output file (default: <input>.reduced.safetensors)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--hinf", action="store_true",
                        help="also check each block's H∞ error on a frequency grid (slower)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _common.add_probe_arguments(parser)


def default_output(src: Path) -> Path:
    """``model.safetensors`` → ``model.reduced.safetensors`` next to the input."""
    stem = src.name[: -len(".safetensors")] if src.name.endswith(".safetensors") else src.name
    return src.with_name(f"{stem}.reduced.safetensors")


def check_output(src: Path, out: Path, force: bool) -> None:
    from ..errors import CheckpointError
    from ..io.atomic import check_not_input, check_output_path

    check_output_path(out)
    check_not_input(out, [src], "reduced checkpoint")
    if out.exists() and not force:
        raise CheckpointError(f"output exists: {out} (use --force to overwrite)")


def reduce_checkpoint(src: Path, out: Path, policy, probe_length: int = 64, seed: int = 0,
                      quiet: bool = True, hinf: bool = False):
    """Load, reduce by ``policy`` (a RankPolicy), verify, write ``out``. Returns
    ``(report, events)``; nothing is written (and ``events`` is empty) when no block gets
    smaller."""
    import passes

    from ..api import run_pipeline
    from ..io import get_builder, load_checkpoint, read_checkpoint_meta, save_checkpoint
    from ..io.builders import call_builder
    from ..train.reducer import history_events

    _common.check_probe(probe_length, seed)
    meta = read_checkpoint_meta(src)
    builder = get_builder(meta.builder)
    dims = call_builder("invalid spec", builder.state_dims, meta.spec)
    _policy.require_reduction(policy, dims)
    _common.check_probe_memory(meta.spec, dims, probe_length)
    pipeline = passes.default_pipeline(policy, hinf=hinf, output=True)
    with _common.progress(quiet, 3, "reduce") as advance:
        advance("loading")
        model, meta = load_checkpoint(src)
        x = _common.probe_input(meta.spec, probe_length, seed)
        if x.is_floating_point():
            x = x.to(_common.model_dtype(model))
        advance("analyse, truncate, verify")
        _, report, state = run_pipeline(model, x, pipeline)
        step = max([_checkpoint_step(meta.extra)] + [e.step for e in meta.history])
        events = history_events(state, step)
        spec = meta.spec
        for e in events:
            spec = call_builder("cannot resize spec", builder.resize, spec, e.block, e.r)
        if events:
            advance("writing")
            save_checkpoint(out, state.model, builder=meta.builder, spec=spec,
                            initial_spec=meta.initial_spec, history=meta.history + events,
                            extra=meta.extra)
    return report, events


def _checkpoint_step(extra: dict[str, str]) -> int:
    try:
        return max(0, int(extra.get("step", "0")))
    except ValueError:
        return 0


def run(args: argparse.Namespace) -> int:
    policy = _policy.policy_from_args(args)
    _common.check_probe(args.probe_length, args.seed)
    out = args.output if args.output is not None else default_output(args.checkpoint)
    check_output(args.checkpoint, out, args.force)
    report, events = reduce_checkpoint(args.checkpoint, out, policy, args.probe_length, args.seed,
                                       getattr(args, "quiet", False), hinf=args.hinf)
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
