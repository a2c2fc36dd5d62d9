"""Fixtures the hardening tests share: a tiny valid checkpoint, copied fresh per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssmcompile.io import save_checkpoint
from ssmcompile.layers import ModelSpec, build_model

CKPT = "model.safetensors"


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    """A tiny LRU model (blocks n = 6 and 5), saved once per module."""
    torch.manual_seed(0)
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(6, 5), d_output=3, d_input=2)
    path = tmp_path_factory.mktemp("base") / CKPT
    return save_checkpoint(path, build_model(spec).eval(), spec=spec.to_dict())


@pytest.fixture
def ckpt(base_checkpoint, tmp_path) -> Path:
    """A private copy of the base checkpoint in the test's own directory."""
    path = tmp_path / CKPT
    path.write_bytes(base_checkpoint.read_bytes())
    return path
