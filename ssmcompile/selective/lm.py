"""A character-level Mamba language model and an offline text corpus for it.

Corpus (:func:`stdlib_docstrings`): the docstrings of a fixed list of Python standard-library
modules and of their public functions, classes and methods, read with ``inspect.getdoc`` from the
running interpreter — available on every machine, no download. The exact text (hence the
figures) depends on the Python version; :class:`Corpus` records its length and a digest.

Model (:class:`SelectiveLM`): embedding → ``n_layers`` × (RMSNorm → Mamba block → residual) →
RMSNorm → linear head. Blocks live at ``layers.{i}.mixer`` so a reduction swaps exactly them.
Streaming: ``initial_state(batch)`` / ``step(ids_k, state)`` run one token through every layer's
block step (state: one (conv window, SSM state) pair per layer), so ``export_onnx(lm, path,
step=True)`` builds its step graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ShapeError, safe_text
from ..layers.spec import MAX_SIZE, SpecError
from .mamba import Mamba1Block, Mamba1Config, Mamba2Block, Mamba2Config

__all__ = ["CORPUS_MODULES", "Corpus", "stdlib_docstrings", "LMConfig", "SelectiveLM"]

CORPUS_MODULES = (
    "collections", "functools", "itertools", "os", "re", "json", "string", "textwrap",
    "argparse", "logging", "pathlib", "typing", "dataclasses", "inspect", "unittest",
    "email.message", "http.client", "socket", "threading", "subprocess", "decimal", "fractions",
    "statistics", "random", "datetime", "calendar", "csv", "zipfile", "tarfile", "shutil",
    "tempfile", "heapq", "bisect", "difflib", "contextlib", "enum", "abc", "io", "codecs",
    "locale", "gettext", "optparse", "configparser", "urllib.parse", "xml.dom.minidom",
    "sqlite3", "asyncio", "queue", "sched",
)

# Printable ASCII and newline; anything else maps to "?" (id of "?").
_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))


def _docstrings(module) -> list[str]:
    out = [inspect.getdoc(module) or ""]
    for name in sorted(vars(module)):
        obj = vars(module)[name]
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        out.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            for attr in sorted(vars(obj)):
                member = vars(obj)[attr]
                if not attr.startswith("_") and callable(member):
                    out.append(inspect.getdoc(member) or "")
    return out


def stdlib_docstrings(modules: tuple[str, ...] = CORPUS_MODULES) -> str:
    """The concatenated (deduplicated, order-preserving) docstrings of ``modules``."""
    seen: dict[str, None] = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:  # e.g. sqlite3 built without its C library: skip, digest records it
            continue
        for doc in _docstrings(module):
            if doc.strip():
                seen.setdefault(doc.strip(), None)
    return "\n\n".join(seen)


@dataclass(frozen=True)
class Corpus:
    """Character ids of a text split into train / validation (the last ``val_fraction``)."""

    train: Tensor
    val: Tensor
    vocab_size: int
    chars: int
    digest: str

    @classmethod
    def from_text(cls, text: str, val_fraction: float = 0.1) -> Corpus:
        index = {c: i for i, c in enumerate(_ALPHABET)}
        unknown = index["?"]
        ids = torch.tensor([index.get(c, unknown) for c in text], dtype=torch.long)
        cut = int(len(ids) * (1 - val_fraction))
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return cls(ids[:cut], ids[cut:], len(_ALPHABET), len(text), digest)

    @staticmethod
    def batch(ids: Tensor, batch: int, length: int, generator: torch.Generator) -> Tensor:
        """``batch`` random windows of ``length + 1`` ids (inputs and shifted targets)."""
        starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
        return torch.stack([ids[s: s + length + 1] for s in starts.tolist()])

    @staticmethod
    def windows(ids: Tensor, count: int, length: int) -> Tensor:
        """``count`` evenly spaced windows of ``length + 1`` ids (a fixed evaluation set)."""
        step = max(1, (len(ids) - length - 1) // count)
        return torch.stack([ids[i * step: i * step + length + 1] for i in range(count)])


@dataclass(frozen=True)
class LMConfig:
    """``structure``: ``"mamba1"`` or ``"mamba2"``; the rest sizes the model.

    ``layer_d_states``: per-layer state dimensions (empty: every layer has ``d_state``), so a
    model whose layers were reduced to different sizes can be described and rebuilt.
    """

    vocab_size: int
    d_model: int = 32
    n_layers: int = 2
    structure: str = "mamba2"
    d_state: int = 128
    expand: int = 2
    d_conv: int = 4
    head_dim: int = 16
    n_groups: int = 1
    layer_d_states: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _validate(self)

    def d_state_of(self, layer: int) -> int:
        return self.layer_d_states[layer] if self.layer_d_states else self.d_state

    @property
    def state_dims(self) -> tuple[int, ...]:
        return tuple(self.d_state_of(i) for i in range(self.n_layers))

    def block_config(self, layer: int = 0) -> Mamba1Config | Mamba2Config:
        n = self.d_state_of(layer)
        if self.structure == "mamba1":
            return Mamba1Config(self.d_model, n, self.d_conv, self.expand)
        return Mamba2Config(self.d_model, n, self.d_conv, self.expand, self.head_dim,
                            self.n_groups)

    def with_state_dims(self, dims: tuple[int, ...]) -> LMConfig:
        """This config with layer ``i`` holding ``dims[i]`` states."""
        return dataclasses.replace(self, layer_d_states=tuple(dims))

    def canonical(self) -> LMConfig:
        """``layer_d_states`` spelled out for every layer (equal architectures compare equal)."""
        return self.with_state_dims(self.state_dims)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples as lists) that ``from_dict`` accepts."""
        d = dataclasses.asdict(self)
        d["layer_d_states"] = list(self.layer_d_states)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        """Inverse of ``to_dict``; SpecError on unknown keys, missing or badly typed values."""
        if not isinstance(d, dict):
            raise SpecError(f"LMConfig spec must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SpecError(f"unknown LMConfig keys: {safe_text(', '.join(unknown), 200)}")
        d = dict(d)
        dims = d.get("layer_d_states", ())
        if not isinstance(dims, (list, tuple)):
            raise SpecError("layer_d_states must be a list of ints, got "
                            f"{safe_text(repr(dims), 100)}")
        d["layer_d_states"] = tuple(dims)
        try:
            return cls(**d)
        except TypeError as err:  # missing required fields
            raise SpecError(f"incomplete LMConfig: {err}") from None


def _validate(c: LMConfig) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for name in ("vocab_size", "d_model", "n_layers", "d_state", "expand", "d_conv",
                 "head_dim", "n_groups"):
        v = getattr(c, name)
        if not is_int(v) or not 1 <= v <= MAX_SIZE:
            raise SpecError(f"LMConfig.{name} must be an int in 1..{MAX_SIZE}, got "
                            f"{safe_text(repr(v), 60)}")
    if c.structure not in ("mamba1", "mamba2"):
        raise SpecError("structure must be 'mamba1' or 'mamba2', got "
                        f"{safe_text(repr(c.structure), 60)}")
    if c.layer_d_states and len(c.layer_d_states) != c.n_layers:
        raise SpecError(f"layer_d_states has {len(c.layer_d_states)} entries for "
                        f"{c.n_layers} layers")
    if not all(is_int(n) and 1 <= n <= MAX_SIZE for n in c.layer_d_states):
        raise SpecError(f"layer_d_states must be ints in 1..{MAX_SIZE}, got "
                        f"{safe_text(list(c.layer_d_states), 100)}")
    if c.structure == "mamba2":
        d_inner = c.expand * c.d_model
        if d_inner % c.head_dim or (d_inner // c.head_dim) % c.n_groups:
            raise SpecError(f"mamba2: d_inner = {d_inner} must split into heads of "
                            f"{c.head_dim}, a multiple of n_groups = {c.n_groups}")


class _Layer(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model)
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))

    def step(self, x_k: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        y_k, state = self.mixer.step(self.norm(x_k), state)
        return x_k + y_k, state


class SelectiveLM(nn.Module):
    """Char-level LM. Shapes: ids (batch, L) int64 → logits (batch, L, vocab)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        block = Mamba1Block if config.structure == "mamba1" else Mamba2Block
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(_Layer(block(config.block_config(i)), config.d_model)
                                    for i in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    # Names of one layer's step-state tensors (the ONNX step graph calls them state_{i}_<name>).
    step_state_names = ("conv", "ssm")

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))

    def initial_state(self, batch_size: int) -> tuple[tuple[Tensor, Tensor], ...]:
        """Zeros, one group per layer: (conv window (batch, d_inner, d_conv − 1),
        SSM state (batch, d_inner, N_i)) with N_i the layer's current state size."""
        return tuple(layer.mixer.initial_state(batch_size) for layer in self.layers)

    def step(
        self, ids_k: Tensor, state: tuple[tuple[Tensor, Tensor], ...]
    ) -> tuple[Tensor, tuple[tuple[Tensor, Tensor], ...]]:
        """One token per sequence: ids_k (batch,) int64, state as :meth:`initial_state` →
        (logits_k (batch, vocab), next state); equals ``forward``'s logits at that position."""
        if len(state) != len(self.layers):
            raise ShapeError(f"state has {len(state)} groups for {len(self.layers)} layers")
        x = self.embed(ids_k)
        new_state = []
        for layer, layer_state in zip(self.layers, state, strict=True):
            x, layer_state = layer.step(x, layer_state)
            new_state.append(layer_state)
        return self.head(self.norm(x)), tuple(new_state)

    @property
    def state_dims(self) -> tuple[int, ...]:
        """Current state dimension of each layer, read from the mixers."""
        return tuple(int(layer.mixer.state_dim) for layer in self.layers)

    @property
    def spec(self) -> LMConfig:
        """The build config with the *current* per-layer state dimensions (for checkpoints)."""
        return self.config.with_state_dims(self.state_dims)
