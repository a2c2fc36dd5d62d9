"""What every subcommand shares: error handling, the standalone entry, probes and progress.

Heavy imports (torch, the compiler) happen inside functions so ``ssmcompile --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import SSMCompileError, safe_text

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def error_line(message: object) -> str:
    """``ssmcompile: error: <message>`` on one line."""
    return "ssmcompile: error: " + safe_text(message)


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)`` with our errors turned into one stderr line and an exit code (no traceback).

    Errors that are not SSMCompileError are bugs and keep their traceback.
    """
    try:
        return int(run(args))
    except SSMCompileError as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ssmcompile: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_quiet(parser: argparse.ArgumentParser, *, default: Any = False) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress display")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed args, or the exit code argparse chose (2 for usage errors, 0 for --help)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR


def standalone_main(
    name: str,
    help_text: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """A subcommand run on its own (``python -m ssmcompile.cli.<name>``)."""
    parser = argparse.ArgumentParser(prog=f"ssmcompile {name}", description=help_text)
    add_quiet(parser)
    add_arguments(parser)
    args = parse(parser, argv)
    return args if isinstance(args, int) else guarded(run, args)


@contextmanager
def progress(quiet: bool, total: int, desc: str) -> Iterator[Callable[[str], None]]:
    """Yields ``advance(stage)``: a stage bar on stderr, shown only on a terminal (tqdm's
    ``disable=None``) and never with ``quiet``; it clears itself when done."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=True if quiet else None,
               leave=False, bar_format="{desc} ({n_fmt}/{total_fmt}) [{elapsed}]")
    started = False

    def advance(stage: str) -> None:
        nonlocal started
        if started:
            bar.update(1)
        started = True
        bar.set_description_str(f"{desc}: {stage}")

    try:
        yield advance
        if started:
            bar.update(1)
    finally:
        bar.close()


def probe_input(spec: dict[str, Any], length: int, seed: int):
    """A (1, length, d_input) float or (1, length) token probe for the model ``spec`` describes.

    Built from its own generator, so the caller's RNG is untouched.
    """
    import torch

    from ..errors import ShapeError

    if length < 1:
        raise ShapeError(f"probe length must be >= 1, got {length}")
    gen = torch.Generator().manual_seed(seed)
    d_input, vocab = spec.get("d_input"), spec.get("vocab_size")
    if isinstance(d_input, int) and d_input > 0:
        return torch.randn(1, length, d_input, generator=gen)
    if isinstance(vocab, int) and vocab > 0:
        return torch.randint(0, vocab, (1, length), generator=gen)
    raise ShapeError("cannot build a probe input: the spec has neither d_input nor vocab_size")


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe-length", type=int, default=64, metavar="L",
                        help="length of the random probe sequence (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")


def model_dtype(model) -> Any:
    """The dtype of the model's first floating parameter (float32 if none)."""
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
