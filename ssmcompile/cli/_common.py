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
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# A probe is one sequence the model runs on (capture, verification); a few hundred steps show a
# block's behaviour, so lengths past this are a typo or an attempt to exhaust memory.
MAX_PROBE_LENGTH = 65_536
# Refuse a probe whose activations would take more than this (rough estimate, probe_bytes).
PROBE_MEMORY_LIMIT = 2 * 1024**3
# torch.Generator.manual_seed takes a 64-bit seed; larger ints overflow deep inside torch.
MAX_SEED = 2**64 - 1


def error_line(message: object) -> str:
    """``ssmcompile: error: <message>`` on one line."""
    return "ssmcompile: error: " + safe_text(message)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are ONE line, ``ssmcompile: error: <subcommand>:
    <what>`` plus where to read the usage, with exit code 2 (``--help`` is unchanged).
    Subcommand parsers made by ``add_subparsers`` get this class too."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("ssmcompile").strip()
        where = f"{command}: " if command else ""
        print(error_line(f"{where}{message} (usage: {self.prog} --help)"), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


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
    parser = Parser(prog=f"ssmcompile {name}", description=help_text)
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


def check_probe(length: object, seed: object) -> None:
    """ShapeError unless ``length`` is in [1, MAX_PROBE_LENGTH] and ``seed`` in [0, MAX_SEED]:
    checked before anything is loaded."""
    from ..errors import ShapeError

    if isinstance(length, bool) or not isinstance(length, int) or not (
            1 <= length <= MAX_PROBE_LENGTH):
        raise ShapeError(f"--probe-length must be an int in [1, {MAX_PROBE_LENGTH}], "
                         f"got {length!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ShapeError(f"--seed must be an int in [0, 2**64 - 1], got {seed!r}")


def probe_bytes(spec: dict[str, Any], state_dims: dict[str, int], length: int) -> int:
    """A rough upper estimate of the memory a probe of ``length`` steps takes through the model
    ``spec`` describes (``state_dims``: its blocks' state sizes): per step and block, 16
    float64 activations as wide as the widest of d_model, d_input and the states, plus the
    complex state trajectory (4 numbers per state)."""
    def size(key: str) -> int:
        value = spec.get(key) if isinstance(spec, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    widest = max([size("d_model"), size("d_input"), *state_dims.values()], default=1)
    per_step = size("d_input") + sum(16 * widest + 4 * n for n in state_dims.values())
    return 8 * length * max(per_step, 1)


def check_probe_memory(spec: dict[str, Any], state_dims: dict[str, int], length: int) -> None:
    """ShapeError when a probe of ``length`` steps would need more than PROBE_MEMORY_LIMIT."""
    from ..errors import ShapeError

    need = probe_bytes(spec, state_dims, length)
    if need > PROBE_MEMORY_LIMIT:
        raise ShapeError(f"--probe-length {length} would need about {need / 1e9:.1f} GB for "
                         f"this model (limit {PROBE_MEMORY_LIMIT / 1e9:.1f} GB): use a shorter "
                         "probe")


def probe_input(spec: dict[str, Any], length: int, seed: int):
    """A (1, length, d_input) float or (1, length) token probe for the model ``spec`` describes.

    Built from its own generator, so the caller's RNG is untouched.
    """
    import torch

    from ..errors import ShapeError

    check_probe(length, seed)
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
