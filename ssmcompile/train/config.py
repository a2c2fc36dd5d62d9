"""Typed training configuration: frozen dataclasses, named presets and TOML files.

A TOML file mirrors the dataclasses; a top-level ``preset = "NAME"`` starts from that preset
and the file overrides what it sets::

    preset = "lru-digits"
    steps = 1200
    pipeline = "..."    # a pipeline string: passes.default_pipeline_text(RankPolicy(tau=0.02))
    [model]
    d_model = 64
    [schedule]
    fractions = [0.02, 0.04, 0.06, 0.08]
    [pragmatic]
    enabled = true

Unknown keys and wrongly typed values are ``ConfigError`` with the offending key named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import SSMCompileError
from .schedule import ReductionSchedule

DEFAULT_TAU = 0.05

# Layers that build a selective (Mamba) language model rather than an SSMModel.
SELECTIVE_LAYERS = ("mamba1", "mamba2")


def default_pipeline(tau: float = DEFAULT_TAU) -> str:
    """The pipeline the trainer runs at each event unless given another one: the passes'
    default pipeline with the energy rule at ``tau``."""
    import passes

    from ..compiler import RankPolicy

    # τ is a fraction of the Hankel energy: outside (0, 1) every event would be skipped
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau < 1:
        raise ConfigError(f"tau must be in (0, 1), got {tau}")
    return passes.default_pipeline_text(RankPolicy(tau=tau))


class ConfigError(SSMCompileError, ValueError):
    """A training configuration (preset, TOML file or override) is invalid."""


@dataclass(frozen=True)
class ModelConfig:
    """The deep SSM (see ``ssmcompile.layers.ModelSpec``); input/output sizes come from data.

    ``state_dim`` is every block's initial n, unless ``state_dims`` gives one n per block (then
    its length must be ``n_blocks``); ``norm`` ``"auto"`` means BatchNorm for
    classification and LayerNorm for language modelling (BatchNorm leaks future tokens).
    ``layer`` ``"mamba1"`` / ``"mamba2"`` (``SELECTIVE_LAYERS``, text data only) trains a
    ``ssmcompile.selective.SelectiveLM`` instead: ``n_blocks`` layers of width ``d_model`` with
    d_state = ``state_dim``; ``dropout``, ``norm``, ``r_min`` and ``r_max`` do not apply.
    """

    layer: str = "lru"
    d_model: int = 48
    state_dim: int = 96
    n_blocks: int = 1
    state_dims: tuple[int, ...] = ()
    dropout: float = 0.1
    norm: str = "auto"
    r_min: float = 0.9
    r_max: float = 0.999

    @property
    def block_state_dims(self) -> tuple[int, ...]:
        """Each block's initial state dimension."""
        return self.state_dims or (self.state_dim,) * self.n_blocks


@dataclass(frozen=True)
class DataConfig:
    """``dataset``: ``"digits"`` | ``"mnist"`` (``path`` = directory of IDX files) |
    ``"text"`` (``path`` = a UTF-8 text file; task ``"lm"``). ``split_seed`` fixes the splits,
    ``upsample`` turns 8×8 digits into 16×16 (L = 256), ``seq_len`` is the text window."""

    dataset: str = "digits"
    path: str | None = None
    batch_size: int = 64
    upsample: bool = False
    seq_len: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up over ``warmup_fraction`` of the run, then cosine decay to
    ``min_lr_fraction``·lr. Parameters inside matched SSM blocks use lr·``ssm_lr_factor`` and no
    weight decay. ``grad_clip``: max global gradient norm (None = no clipping)."""

    lr: float = 4e-3
    weight_decay: float = 0.05
    ssm_lr_factor: float = 0.5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_fraction: float = 0.1
    min_lr_fraction: float = 0.0
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class PragmaticConfig:
    """Pragmatic mode: keep the model from before each event, and if validation accuracy at
    the next evaluation is more than ``tolerance`` (absolute) below its value just before the
    event, roll back to it and stop reducing."""

    enabled: bool = False
    tolerance: float = 0.02


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. ``pipeline`` runs at each scheduled event (see
    ``ssmcompile.run_pipeline``); ``compile``: ``"auto"`` | ``"on"`` | ``"off"`` (auto compiles
    on CUDA only: on this project's 2-core CPUs inductor did not pay for its compile time, see
    ``ssmcompile.train.compile``); ``threads``: torch intra-op threads (recorded with results);
    ``scan_threads``: the scan kernels' threads, 0 = every core this process may use (their
    results do not depend on it, so resume stays bit-exact; see ``ssmcompile.ops.threads`` for
    why torch stays at 1 thread and the scans do not).
    ``checkpoint_every`` / ``keep_last``: periodic checkpoints kept; the best by validation
    accuracy is kept too. ``probe_size``: training examples the pipeline analyses/verifies on.
    ``strict_reduction``: raise when the pipeline fails instead of skipping that event."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ReductionSchedule = field(default_factory=ReductionSchedule)
    pragmatic: PragmaticConfig = field(default_factory=PragmaticConfig)
    steps: int = 1000
    pipeline: str = field(default_factory=default_pipeline)
    seed: int = 0
    threads: int = 1
    scan_threads: int = 0
    device: str = "cpu"
    compile: str = "auto"
    compile_backend: str = "inductor"
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    keep_last: int = 2
    probe_size: int = 64
    progress: bool = True
    strict_reduction: bool = False
    out_dir: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (``ConfigError`` on a bad value)."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as err:
            raise ConfigError(f"bad config override: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples as lists) that ``from_dict`` accepts."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
        """Overlay ``data`` (the TOML layout, ``preset`` key allowed) on ``base`` or the
        preset it names, or the defaults."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a table of keys, got {type(data).__name__}")
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None:
            if not isinstance(preset, str):
                raise ConfigError(f"preset must be a string, got {preset!r}")
            from .presets import get_preset  # the presets are built from this module

            base = get_preset(preset)
        from .config_toml import overlay

        return overlay(cls, base or cls(), data, "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _validate(c: TrainConfig) -> None:
    from .config_limits import validate  # the limits module reads these classes

    validate(c, ConfigError)


__all__ = ["ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "PragmaticConfig",
           "TrainConfig", "load_config", "default_pipeline",
           "DEFAULT_TAU", "SELECTIVE_LAYERS"]


from .config_toml import load_config  # noqa: E402 - parses into the classes above
