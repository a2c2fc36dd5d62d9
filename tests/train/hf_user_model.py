"""A Hugging Face ``MambaForCausalLM`` (tiny, random weights, nothing downloaded) as a user's
model, with a next-token dataset: shared by the HF trainer test and its subprocess driver (so it
must stay importable alone)."""

from __future__ import annotations

import torch
import transformers

from ssmcompile.train.user_data import user_task_data

MIXERS = ("backbone.layers.0.mixer", "backbone.layers.1.mixer")


def make_hf_mamba(state_size: int = 8) -> transformers.MambaForCausalLM:
    config = transformers.MambaConfig(vocab_size=32, hidden_size=16, state_size=state_size,
                                      num_hidden_layers=2, expand=2, conv_kernel=4,
                                      use_cache=False)
    return transformers.MambaForCausalLM(config)


def lm_data():
    """Rotations of a cyclic token sequence: next-token prediction that a tiny model learns."""
    g = torch.Generator().manual_seed(0)
    base = torch.arange(32).repeat(2)[:25]
    seqs = torch.stack([torch.roll(base, int(s)) for s in torch.randint(0, 32, (80,), generator=g)])
    x, y = seqs[:, :-1], seqs[:, 1:]
    return user_task_data((x[:64], y[:64]), (x[64:], y[64:]), task="lm")


def trainer_options() -> dict:
    """Trainer keyword arguments of the HF runs (for the subprocess driver)."""
    return {"model": make_hf_mamba, "data": lm_data(), "task": "lm"}
