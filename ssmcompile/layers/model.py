"""The paper's deep SSM: encoder → blocks → (mean over time →) linear head.

``task="classify"``: y = head(mean_t(blocks(encoder(u)))), one output per sequence.
``task="lm"``: y_t = head(blocks(encoder(u))_t), causal per-token logits.

The model never reduces itself; the compiler swaps ``blocks[i].ssm`` for rebuilt layers, and
``model.spec`` always reports the current per-block state dimensions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from .block import SSMBlock
from .dense import DenseLTI
from .lru import LRU
from .s4d import S4D
from .s5 import S5
from .spec import ModelSpec

State = tuple[tuple[Tensor, ...], ...]


def make_layer(spec: ModelSpec, state_dim: int) -> nn.Module:
    """One SSM layer of kind ``spec.layer`` with width ``spec.d_model`` and ``state_dim``."""
    H = spec.d_model
    if spec.layer == "lru":
        return LRU(H, state_dim, spec.r_min, spec.r_max, spec.max_phase)
    if spec.layer == "s5":
        return S5(H, state_dim, spec.dt_min, spec.dt_max)
    if spec.layer == "s4d":
        return S4D(H, state_dim, spec.dt_min, spec.dt_max)
    return DenseLTI(H, state_dim, spec.r_min, spec.r_max)  # spec validation leaves only "dense"


class SSMModel(nn.Module):
    """Deep SSM built from a ``ModelSpec``.

    Inputs: ``(batch, L, d_input)`` floats, or ``(batch, L)`` token ids when ``vocab_size`` is
    set. Outputs: ``(batch, d_output)`` for classify, ``(batch, L, d_output)`` for lm.

    ``step``/``initial_state`` run the model one time step at a time; the state is a tuple with
    one tuple of real tensors per block, plus ``(running_sum (batch, H), count (batch, 1))`` for
    classify, whose step output is the head applied to the running mean so far (so the last step
    equals ``forward`` in eval mode).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self._spec = spec
        H = spec.d_model
        self.encoder: nn.Module = (
            nn.Embedding(spec.vocab_size, H)
            if spec.vocab_size is not None
            else nn.Linear(spec.d_input, H)  # type: ignore[arg-type]
        )
        self.blocks = nn.ModuleList(
            SSMBlock(make_layer(spec, n), H, spec.dropout, spec.norm) for n in spec.state_dims
        )
        self.head = nn.Linear(H, spec.d_output)

    @property
    def state_dims(self) -> tuple[int, ...]:
        """Current state dimension of each block, read from the layers."""
        return tuple(b.state_dim for b in self.blocks)

    @property
    def spec(self) -> ModelSpec:
        """The build spec with the *current* per-block state dimensions (for checkpoints)."""
        return dataclasses.replace(self._spec, state_dims=self.state_dims)

    def forward(self, u: Tensor) -> Tensor:
        x = self.encoder(u)
        for block in self.blocks:
            x = block(x)
        if self._spec.task == "classify":
            x = x.mean(dim=1)
        return self.head(x)

    def initial_state(self, batch_size: int) -> State:
        states: list[tuple[Any, ...]] = [b.initial_state(batch_size) for b in self.blocks]
        if self._spec.task == "classify":
            z = self.head.weight.new_zeros(batch_size, self._spec.d_model)
            states.append((z, self.head.weight.new_zeros(batch_size, 1)))
        return tuple(states)

    def step(self, u_k: Tensor, state: State) -> tuple[Tensor, State]:
        """u_k: (batch, d_input) or (batch,) tokens → (y_k, state); y_k (batch, d_output)."""
        x = self.encoder(u_k)
        new: list[tuple[Any, ...]] = []
        for block, s in zip(self.blocks, state[: len(self.blocks)], strict=True):
            x, s = block.step(x, s)
            new.append(s)
        if self._spec.task == "classify":
            total, count = state[len(self.blocks)]
            total, count = total + x, count + 1
            new.append((total, count))
            x = total / count
        return self.head(x), tuple(new)


def build_model(spec: ModelSpec) -> SSMModel:
    """Build the (possibly reduced) architecture ``spec`` describes, freshly initialised."""
    return SSMModel(spec)
