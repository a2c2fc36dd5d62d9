"""The checks every training config passes, whether it comes from a preset, a TOML file, the
command line or a run directory's stored config: types were checked by ``config_toml``; here
values must make sense and stay within bounds.

Why bounds: a config is input, and a run directory's stored config is input from a file. Without
caps, ``d_model = 2**63`` reached torch and died in a C++ backtrace, a seed past 2**32 in
numpy's seeding, ``every = 1`` over 10**9 steps would list 10**8 event steps, and ``lr = nan``
trained silently. The caps are far above anything this toolkit trains (its presets use widths
of 8–64, up to 256 states, 2 blocks, 20,000 steps) and refuse only what no run can complete.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TrainConfig

MAX_STEPS = 10**9  # steps, eval/log/checkpoint intervals, explicit event steps
MAX_DIM = 1 << 16  # model.d_model, model.state_dim and each of model.state_dims
MAX_BLOCKS = 1024
MAX_PARAMETERS = 10**9  # a rough estimate: 4·H·n + 4·H² per block
MAX_BATCH = 1 << 20  # data.batch_size, data.seq_len, probe_size
MAX_THREADS = 1024
MAX_EVENTS = 10_000  # reduction events one schedule may place
MAX_SEED = 2**32 - 1  # numpy's seeding takes nothing larger
MAX_TEXT = 4096  # characters of any string field but the pipeline
MAX_PIPELINE = 1 << 16
MAX_KEEP = 10_000  # keep_last
# A torch.compile backend is looked up by name in torch's registry; anything not shaped like a
# registry name cannot be one, and checking the shape needs no torch import.
BACKEND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,4})?")


def show(value: Any) -> str:
    """``value`` for a message: short, on one line, and safe for ints too long to print
    (Python refuses to turn an int of more than 4300 digits into text)."""
    from ..errors import safe_text

    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    return safe_text(repr(value), 80)


def estimated_parameters(c: TrainConfig) -> int:
    """Roughly the parameters ``c.model`` builds (B, C, Λ and the mixing layers of each block)."""
    h = c.model.d_model
    return sum(4 * h * n + 4 * h * h for n in c.model.block_state_dims)


def validate(c: TrainConfig, error: type[Exception]) -> None:
    """Raise ``error`` (ConfigError) naming the first field of ``c`` that is out of range."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise error(msg)

    def within(name: str, value: int, low: int, high: int) -> None:
        need(value >= low, f"{name} must be >= {low}, got {show(value)}")
        need(value <= high, f"{name} must be <= {high}, got {show(value)}")

    _check_scalars(c, "", need)
    for name in ("steps", "eval_every", "log_every", "checkpoint_every"):
        within(name, getattr(c, name), 1, MAX_STEPS)
    within("threads", c.threads, 1, MAX_THREADS)
    within("scan_threads", c.scan_threads, 0, MAX_THREADS)
    within("keep_last", c.keep_last, 1, MAX_KEEP)
    within("probe_size", c.probe_size, 1, MAX_BATCH)
    within("seed", c.seed, 0, MAX_SEED)
    need(c.compile in ("auto", "on", "off"), f"compile must be auto|on|off, got {c.compile!r}")
    need(BACKEND_NAME.fullmatch(c.compile_backend) is not None,
         f"compile_backend is not a torch.compile backend name: {c.compile_backend!r}")
    need(DEVICE.fullmatch(c.device) is not None,
         f"device must be cpu, cuda or cuda:N, got {c.device!r}")
    _validate_data(c, need, within)
    _validate_model(c, need, within)
    _validate_optim(c, need)
    _validate_schedule(c, need, within)
    need(c.pragmatic.tolerance >= 0, "pragmatic.tolerance must be >= 0")


def _check_scalars(obj: Any, prefix: str, need) -> None:
    """Every float finite, every string short and free of NUL (TOML and JSON allow both)."""
    for f in dataclasses.fields(obj):
        name, value = prefix + f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_scalars(value, name + ".", need)
            continue
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float):
                need(math.isfinite(v), f"{name} must be a finite number, got {v}")
            elif isinstance(v, str):
                limit = MAX_PIPELINE if name == "pipeline" else MAX_TEXT
                need(len(v) <= limit, f"{name} is {len(v)} characters long (at most {limit})")
                need("\x00" not in v, f"{name} contains a NUL character")


def _validate_data(c: TrainConfig, need, within) -> None:
    d = c.data
    need(d.dataset in ("digits", "mnist", "text"),
         f"data.dataset must be digits|mnist|text, got {d.dataset!r}")
    need(d.dataset == "digits" or d.path is not None,
         f"data.dataset={d.dataset!r} needs data.path")
    within("data.batch_size", d.batch_size, 1, MAX_BATCH)
    within("data.seq_len", d.seq_len, 1, MAX_BATCH)
    within("data.split_seed", d.split_seed, 0, MAX_SEED)
    need(0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1
         and d.val_fraction + d.test_fraction < 1,
         f"data.val_fraction and data.test_fraction must be in [0, 1) with a sum below 1, "
         f"got {d.val_fraction} and {d.test_fraction}")


def _validate_model(c: TrainConfig, need, within) -> None:
    from .config import SELECTIVE_LAYERS

    m = c.model
    need(m.norm in ("auto", "batch", "layer"),
         f"model.norm must be auto|batch|layer, got {m.norm!r}")
    need(m.layer not in SELECTIVE_LAYERS or c.data.dataset == "text",
         f"model.layer={m.layer!r} is a language model: it needs data.dataset='text'")
    within("model.d_model", m.d_model, 1, MAX_DIM)
    within("model.state_dim", m.state_dim, 1, MAX_DIM)
    within("model.n_blocks", m.n_blocks, 1, MAX_BLOCKS)
    need(not m.state_dims or (len(m.state_dims) == m.n_blocks
                              and all(1 <= n <= MAX_DIM for n in m.state_dims)),
         f"model.state_dims needs one n in 1..{MAX_DIM} per block ({m.n_blocks}), "
         f"got {list(m.state_dims)[:8]}{' ...' if len(m.state_dims) > 8 else ''}")
    need(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    need(0 < m.r_min <= m.r_max < 1,
         f"model needs 0 < r_min <= r_max < 1, got {m.r_min}, {m.r_max}")
    params = estimated_parameters(c)
    need(params <= MAX_PARAMETERS, f"model too large: about {params:.3g} parameters "
                                   f"(at most {MAX_PARAMETERS:.0e})")


def _validate_optim(c: TrainConfig, need) -> None:
    o = c.optim
    need(o.lr > 0 and o.ssm_lr_factor > 0, "optim.lr and optim.ssm_lr_factor must be > 0")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(all(0 <= b < 1 for b in o.betas), f"optim.betas must be in [0, 1), got {o.betas}")
    need(o.eps > 0, f"optim.eps must be > 0, got {o.eps}")
    need(0 <= o.warmup_fraction < 1, f"optim.warmup_fraction must be in [0, 1), got "
                                     f"{o.warmup_fraction}")
    need(0 <= o.min_lr_fraction <= 1, "optim.min_lr_fraction must be in [0, 1]")
    need(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip must be > 0 or unset")


def _validate_schedule(c: TrainConfig, need, within) -> None:
    s = c.schedule
    for name in ("steps", "fractions"):
        n = len(getattr(s, name))
        need(n <= MAX_EVENTS, f"schedule.{name} lists {n} events (at most {MAX_EVENTS})")
    for step in s.steps:
        within("schedule.steps", step, 1, MAX_STEPS)
    within("schedule.count", s.count, 0, MAX_EVENTS)
    if s.every is not None:
        within("schedule.every", s.every, 1, MAX_STEPS)
        n = max(0, min(int(s.end * c.steps), c.steps - 1)) // s.every  # as event_steps counts
        need(n <= MAX_EVENTS, f"schedule.every={s.every} places {n} events in {c.steps} steps "
                              f"(at most {MAX_EVENTS})")


__all__ = ["validate", "estimated_parameters", "MAX_STEPS", "MAX_DIM", "MAX_BLOCKS",
           "MAX_PARAMETERS", "MAX_EVENTS", "MAX_SEED"]
