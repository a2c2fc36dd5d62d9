"""Named training presets (``--preset NAME``, ``preset = "NAME"`` in a TOML file)."""

from __future__ import annotations

from .config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    default_pipeline,
)

PRESETS: dict[str, TrainConfig] = {
    # The README demo: one LRU block on sequential 8×8 digits, n = 96 shrinking over 4 events
    # (measured: 96 → 34 at τ = 0.1 with 96.7 % validation accuracy after 1,000 steps).
    "lru-digits": TrainConfig(pipeline=default_pipeline(0.1)),
    "lru-digits16": TrainConfig(data=DataConfig(upsample=True), steps=1500),
    "s5-digits": TrainConfig(model=ModelConfig(layer="s5")),
    # The paper's sMNIST setting (1 block, H = 8, n = 256) — needs local IDX files.
    "lru-mnist": TrainConfig(
        model=ModelConfig(d_model=8, state_dim=256, dropout=0.0),
        data=DataConfig(dataset="mnist", path="data/mnist", batch_size=50, test_fraction=0.0),
        optim=OptimConfig(lr=4e-4), steps=20000, eval_every=1000, checkpoint_every=1000,
        pipeline=default_pipeline(0.01),
    ),
    "lru-text": TrainConfig(
        model=ModelConfig(d_model=64, state_dim=64, n_blocks=2, norm="layer"),
        data=DataConfig(dataset="text", path="input.txt", batch_size=32, seq_len=128,
                        val_fraction=0.05, test_fraction=0.05),
        steps=2000, eval_every=200, checkpoint_every=200,
    ),
    # A small Mamba-2 character LM: 2 layers, d_state 32 shrinking in training.
    "mamba2-text": TrainConfig(
        model=ModelConfig(layer="mamba2", d_model=32, state_dim=32, n_blocks=2),
        data=DataConfig(dataset="text", path="input.txt", batch_size=32, seq_len=128,
                        val_fraction=0.05, test_fraction=0.05),
        steps=2000, eval_every=200, checkpoint_every=200,
    ),
}


def get_preset(name: str) -> TrainConfig:
    """The named preset, else ConfigError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})"
                          ) from None


__all__ = ["PRESETS", "get_preset"]
