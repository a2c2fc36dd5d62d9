"""A character-level Mamba language model and an offline text corpus for it.

Corpus (:func:`stdlib_docstrings`): the docstrings of a fixed list of Python standard-library
modules and of their public functions, classes and methods, read with ``inspect.getdoc`` from the
running interpreter — available on every machine, no download. The exact text (hence the
figures) depends on the Python version; :class:`Corpus` records its length and a digest.

Model (:class:`SelectiveLM`): embedding → ``n_layers`` × (RMSNorm → Mamba block → residual) →
RMSNorm → linear head. Blocks live at ``layers.{i}.mixer`` so a reduction swaps exactly them.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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
    """``structure``: ``"mamba1"`` or ``"mamba2"``; the rest sizes the model."""

    vocab_size: int
    d_model: int = 32
    n_layers: int = 2
    structure: str = "mamba2"
    d_state: int = 128
    expand: int = 2
    d_conv: int = 4
    head_dim: int = 16
    n_groups: int = 1

    def block_config(self) -> Mamba1Config | Mamba2Config:
        if self.structure == "mamba1":
            return Mamba1Config(self.d_model, self.d_state, self.d_conv, self.expand)
        if self.structure == "mamba2":
            return Mamba2Config(self.d_model, self.d_state, self.d_conv, self.expand,
                                self.head_dim, self.n_groups)
        raise ValueError(f"structure must be 'mamba1' or 'mamba2', got {self.structure!r}")


class _Layer(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model)
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))


class SelectiveLM(nn.Module):
    """Char-level LM. Shapes: ids (batch, L) int64 → logits (batch, L, vocab)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        block = Mamba1Block if config.structure == "mamba1" else Mamba2Block
        cfg = config.block_config()
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(_Layer(block(cfg), config.d_model)
                                    for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))

    def state_dims(self) -> tuple[int, ...]:
        return tuple(int(layer.mixer.state_dim) for layer in self.layers)
