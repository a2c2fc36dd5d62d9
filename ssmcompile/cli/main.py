"""``ssmcompile``: dispatch to the subcommand modules that import (analyze, reduce, inspect,
export, train). Our errors print ``ssmcompile: error: <message>`` and exit 1; usage errors
print one such line too (``<subcommand>: <what> (usage: ... --help)``) and exit 2; Ctrl-C
exits 130."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from . import _common

SUBCOMMANDS = ("analyze", "reduce", "inspect", "export", "train")
_INTERFACE = ("NAME", "HELP", "add_arguments", "run")


def available_subcommands() -> tuple[list[ModuleType], dict[str, str]]:
    """``(modules, unavailable)``: the subcommand modules that import and follow the interface,
    and why others did not load (an optional extra such as ONNX may be missing; that only drops
    its subcommand, and ``--help`` says why). A module that does not exist is simply absent."""
    found: list[ModuleType] = []
    unavailable: dict[str, str] = {}
    for name in SUBCOMMANDS:
        qualified = f"{__package__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ImportError as err:
            if not (isinstance(err, ModuleNotFoundError) and err.name == qualified):
                unavailable[name] = " ".join(str(err).split())
            continue
        missing = [attr for attr in _INTERFACE if not hasattr(module, attr)]
        if missing:
            unavailable[name] = f"module lacks {', '.join(missing)}"
        else:
            found.append(module)
    return found, unavailable


def build_parser() -> argparse.ArgumentParser:
    modules, unavailable = available_subcommands()
    epilog = "; ".join(f"{name} unavailable: {why}" for name, why in unavailable.items())
    parser = _common.Parser(
        prog="ssmcompile",
        description="Shrink state-space models: Hankel analysis and balanced truncation.",
        epilog=epilog or None,
    )
    parser.add_argument("--version", action="version", version=f"ssmcompile {__version__}")
    _common.add_quiet(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in modules:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        # also accepted after the subcommand; SUPPRESS keeps a global --quiet from being reset
        _common.add_quiet(p, default=argparse.SUPPRESS)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _common.parse(parser, None if argv is None else list(argv))
    if isinstance(args, int):
        return args
    return _common.guarded(args._run, args)


if __name__ == "__main__":
    raise SystemExit(main())
