"""``ssmcompile train``: train an SSM and shrink it while it trains.

    ssmcompile train --preset lru-digits --steps 1000 --out runs/demo
    ssmcompile train my_run.toml --out runs/mine
    ssmcompile train --out runs/demo --resume          # config stored in the run
    ssmcompile train --out runs/demo --resume --steps 2000 --override steps
    torchrun --nproc-per-node 2 -m ssmcompile.cli.train --preset lru-digits --out runs/ddp

Leaves DIR/last.safetensors (weights), DIR/last.state.safetensors (trainer state),
DIR/run.json (the run's identity: config, run id, data fingerprint), DIR/metrics.jsonl and PNG
plots. A fresh run needs an empty (or missing) DIR unless ``--force``; ``--resume`` refuses a
config that differs from the stored one except in the fields ``--override`` names (see
``ssmcompile.train.run_identity``). Errors: one line on stderr and a non-zero exit code
(``_common.guarded``); ``-q`` hides the progress bar.
"""

from __future__ import annotations

import argparse
import sys

from . import _common

NAME = "train"
HELP = "train an SSM on a dataset, reducing its state dimension on a schedule"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="TOML config file (see ssmcompile.train.config)")
    parser.add_argument("--preset", help="start from a named preset (e.g. lru-digits)")
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--out", help="run directory for checkpoints, metrics and plots")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in a non-empty --out (deletes an earlier run's "
                             "checkpoints, metrics and plots there; other files are kept)")
    parser.add_argument("--override", action="append", default=[], metavar="FIELD[,FIELD]",
                        help="with --resume: let these fields differ from the run's stored "
                             "config (steps, threads, device, compile, compile_backend, "
                             "eval_every, log_every, strict_reduction)")
    parser.add_argument("--pipeline", help="reduction pipeline run at each event")
    parser.add_argument("--tau", type=float, help="the default pipeline with this energy τ")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="cpu or cuda[:N]")
    parser.add_argument("--compile", choices=("auto", "on", "off"))
    parser.add_argument("--data-path", help="MNIST directory or text file for those datasets "
                        "(a resume from the stored config needs it again unless the data lie "
                        "inside --out)")
    parser.add_argument("--pragmatic", action="store_true",
                        help="roll back an event that costs validation accuracy, then stop")


def build_config(args: argparse.Namespace):
    """The TrainConfig the arguments describe (file or preset, then the flags)."""
    from ..train.config import ConfigError, default_pipeline, load_config
    from ..train.presets import get_preset
    from ..train.run_dir import check_out_path
    from ..train.run_identity import stored_config

    if args.config and args.preset:
        raise ConfigError("give a CONFIG.toml or --preset, not both")
    if args.config:
        config = load_config(args.config)
    elif args.preset:
        config = get_preset(args.preset)
    elif args.resume and args.out:
        check_out_path(args.out)
        config = stored_config(args.out, args.data_path)
    else:
        raise ConfigError("give a CONFIG.toml or --preset NAME (e.g. --preset lru-digits)")
    if args.pipeline and args.tau is not None:
        raise ConfigError("give --pipeline or --tau, not both")
    if args.tau is not None and not 0 < args.tau < 1:
        raise ConfigError(f"--tau must be in (0, 1), got {args.tau:g}")
    changes = {"steps": args.steps, "out_dir": args.out, "threads": args.threads,
               "seed": args.seed, "device": args.device, "compile": args.compile,
               "pipeline": args.pipeline or (default_pipeline(args.tau)
                                             if args.tau is not None else None)}
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    if getattr(args, "quiet", False):
        config = config.replace(progress=False)
    if args.data_path:
        config = config.replace(data=_replace(config.data, path=args.data_path))
    if args.pragmatic:
        config = config.replace(pragmatic=_replace(config.pragmatic, enabled=True))
    if args.resume and config.out_dir is None:
        raise ConfigError("--resume needs --out DIR (or out_dir in the config)")
    return config


def overrides(args: argparse.Namespace) -> list[str]:
    """``--override a,b --override c`` → ["a", "b", "c"]."""
    return [name.strip() for value in args.override for name in value.split(",")
            if name.strip()]


def _replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def run(args: argparse.Namespace) -> int:
    """Train; our errors propagate as SSMCompileError (the caller prints them)."""
    from ..train.trainer import train

    result = train(build_config(args), resume=args.resume, force=args.force,
                   override=overrides(args))
    print(result.summary())
    if result.out_dir is not None:
        print(f"run directory: {result.out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return _common.standalone_main(NAME, HELP, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
