"""ModelSpec: the typed, JSON-able description of a deep SSM, reduced or not.

A checkpoint stores ``spec.to_dict()``; ``ModelSpec.from_dict`` validates it and ``build_model``
rebuilds the (possibly reduced, per-block) architecture before loading weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import SSMCompileError, safe_text

SPEC_VERSION = 1
LAYER_KINDS = ("lru", "s5", "s4d", "dense")
# torch sizes are int64 and allocation sizes multiply them: larger values fail inside C++
# with a backtrace instead of a message
MAX_SIZE = 1 << 31
TASKS = ("classify", "lm")
NORMS = ("batch", "layer")


class SpecError(SSMCompileError, ValueError):
    """A ModelSpec (or its dict form) is malformed."""


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of an ``SSMModel``.

    - ``layer``: SSM kind, one of ``"lru" | "s5" | "s4d" | "dense"``.
    - ``d_model``: H, the width of every block.
    - ``state_dims``: one state dimension per block (its length is the number of blocks);
      blocks differ after reduction. For ``"s4d"`` each entry is N, modes per channel.
    - ``d_output``: classes (``task="classify"``) or logits per token (``task="lm"``).
    - ``task``: ``"classify"`` (mean over time → head) or ``"lm"`` (per-token head).
    - ``d_input`` xor ``vocab_size``: continuous inputs (linear encoder) or tokens (embedding).
    - ``dropout``, ``norm`` (``"batch"``: BatchNorm over H without affine, the paper's;
      ``"layer"``: LayerNorm). ``norm="batch"`` is refused for ``task="lm"``: batch statistics
      over the sequence leak future tokens in training.
    - Init hyper-parameters: ``r_min``, ``r_max``, ``max_phase`` (LRU ring; dense uses
      ``r_min``/``r_max`` for its singular values), ``dt_min``, ``dt_max`` (S5/S4D steps).
    """

    layer: str
    d_model: int
    state_dims: tuple[int, ...]
    d_output: int
    task: str = "classify"
    d_input: int | None = None
    vocab_size: int | None = None
    dropout: float = 0.0
    norm: str = "batch"
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi
    dt_min: float = 1e-3
    dt_max: float = 1e-1

    def __post_init__(self) -> None:
        if isinstance(self.state_dims, list):
            object.__setattr__(self, "state_dims", tuple(self.state_dims))
        _validate(self)

    @property
    def n_blocks(self) -> int:
        return len(self.state_dims)

    def with_state_dims(self, state_dims: tuple[int, ...]) -> ModelSpec:
        """The same spec with new per-block state dimensions (e.g. after a reduction)."""
        return dataclasses.replace(self, state_dims=tuple(state_dims))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists) tagged with ``spec_version``."""
        d: dict[str, Any] = {"spec_version": SPEC_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``; raises SpecError on unknown keys, missing or bad values."""
        if not isinstance(d, dict):
            raise SpecError(f"spec must be a dict, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("spec_version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(f"unsupported spec_version {safe_text(repr(version), 60)} (expected "
                            f"{SPEC_VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SpecError(f"unknown ModelSpec keys: {safe_text(', '.join(unknown), 200)}")
        sd = d.get("state_dims")
        if not isinstance(sd, (list, tuple)):
            raise SpecError(f"state_dims must be a list of ints, got {safe_text(repr(sd), 100)}")
        d["state_dims"] = tuple(sd)
        try:
            return cls(**d)
        except TypeError as err:  # missing required fields
            raise SpecError(f"incomplete ModelSpec: {err}") from None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _validate(s: ModelSpec) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise SpecError(msg)

    def shown(v: object) -> str:
        return safe_text(repr(v), 60)

    need(s.layer in LAYER_KINDS, f"layer must be one of {LAYER_KINDS}, got {shown(s.layer)}")
    need(s.task in TASKS, f"task must be one of {TASKS}, got {shown(s.task)}")
    need(s.norm in NORMS, f"norm must be one of {NORMS}, got {shown(s.norm)}")
    for name in ("d_model", "d_output"):
        v = getattr(s, name)
        need(_is_int(v) and 0 < v <= MAX_SIZE,
             f"{name} must be a positive int <= {MAX_SIZE}, got {safe_text(repr(v), 60)}")
    need(
        isinstance(s.state_dims, tuple)
        and len(s.state_dims) > 0
        and all(_is_int(n) and 0 < n <= MAX_SIZE for n in s.state_dims),
        f"state_dims must be a non-empty tuple of positive ints <= {MAX_SIZE}, got "
        f"{safe_text(repr(s.state_dims), 100)}",
    )
    need(
        (s.d_input is None) != (s.vocab_size is None),
        "set exactly one of d_input (continuous inputs) and vocab_size (tokens)",
    )
    for name in ("d_input", "vocab_size"):
        v = getattr(s, name)
        need(v is None or (_is_int(v) and 0 < v <= MAX_SIZE),
             f"{name} must be a positive int <= {MAX_SIZE}, got {safe_text(repr(v), 60)}")
    need(
        not (s.task == "lm" and s.norm == "batch"),
        "norm='batch' leaks future tokens in an lm; use norm='layer'",
    )
    for name in ("dropout", "r_min", "r_max", "max_phase", "dt_min", "dt_max"):
        need(_is_real(getattr(s, name)), f"{name} must be a finite number")
    need(0 <= s.dropout < 1, f"dropout must be in [0, 1), got {s.dropout}")
    need(0 < s.r_min <= s.r_max < 1, f"need 0 < r_min <= r_max < 1, got {s.r_min}, {s.r_max}")
    need(s.max_phase > 0, f"max_phase must be > 0, got {s.max_phase}")
    need(0 < s.dt_min <= s.dt_max, f"need 0 < dt_min <= dt_max, got {s.dt_min}, {s.dt_max}")
