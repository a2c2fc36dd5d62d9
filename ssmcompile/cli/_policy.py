"""The rank-policy flags (``--rank/--tau/--budget/--fraction/--block``), mapped one to one onto
:class:`ssmcompile.compiler.RankPolicy`, which alone validates them."""

from __future__ import annotations

import argparse

from ..compiler import RankPolicy
from ..errors import RankError

_RULES = ("rank", "tau", "budget", "fraction")
_FLAGGED = (*_RULES, "block")


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--rank", type=int, help="keep R states in every block")
    rule.add_argument("--tau", type=float, help="energy rule: keep 1 - TAU of Σσ per block")
    rule.add_argument("--budget", type=float, help="keep this fraction of all states overall")
    rule.add_argument("--fraction", type=float, help="keep this fraction of each block")
    parser.add_argument("--block", action="append", default=[], metavar="NAME=R",
                        help="rank for one block (repeatable), e.g. blocks.0.ssm=8")


def parse_block_ranks(items: list[str]) -> tuple[tuple[str, int], ...]:
    """``["blocks.0.ssm=8", ...]`` → ``(("blocks.0.ssm", 8), ...)``; RankError if malformed."""
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


def as_flag_error(err: RankError) -> RankError:
    """The policy's message spelled with the CLI's flag (``tau must ...`` → ``--tau must ...``)."""
    text = str(err)
    return RankError("--" + text) if text.split(" ", 1)[0] in _FLAGGED else err


def policy_from_args(args: argparse.Namespace) -> RankPolicy:
    if all(getattr(args, k) is None for k in _RULES) and not args.block:
        raise RankError("choose one of --rank, --tau, --budget, --fraction (or give --block)")
    try:
        return RankPolicy(rank=args.rank, tau=args.tau, budget=args.budget,
                          fraction=args.fraction, overrides=parse_block_ranks(args.block))
    except RankError as err:
        raise as_flag_error(err) from None


def require_reduction(policy: RankPolicy, dims: dict[str, int]) -> None:
    """Every block a fixed rank names must shrink (the CLI refuses a no-op rank)."""
    try:
        policy.require_reduction(dims)
    except RankError as err:
        raise as_flag_error(err) from None
