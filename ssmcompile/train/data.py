"""Datasets that need no download, and a deterministic, resumable batch order.

- ``digits``: scikit-learn's bundled 8×8 digits as a pixel sequence, L = 64 (or bilinearly
  upsampled to 16×16, L = 256), inputs (N, L, 1) standardised by the training split's mean/std.
- ``mnist``: MNIST from local IDX files (``train-images-idx3-ubyte`` etc., optionally ``.gz``)
  parsed here with numpy, L = 784.
- ``text``: a character-level text file for next-character prediction (task ``"lm"``); the
  vocabulary is the sorted set of characters in the file.

Splits are fixed by a seed, so every run and every rank sees the same train/val/test sets.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import SSMCompileError
from .config import DataConfig

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(SSMCompileError, ValueError):
    """A dataset file is missing or malformed, or a dataset option is invalid."""


@dataclass(frozen=True)
class Split:
    """``x``: (N, L, d_input) float32 or (N, L) int64 tokens; ``y``: (N,) or (N, L) int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class TaskData:
    """Train/val/test splits and what the model needs to know about them (``test`` may be None
    for user data, see ``user_data``)."""

    name: str
    task: str  # "classify" | "lm" | "custom"
    train: Split
    val: Split
    test: Split | None
    n_classes: int
    d_input: int | None = None
    vocab_size: int | None = None
    vocab: str | None = None

    @property
    def seq_len(self) -> int:
        return int(self.train.x.shape[1])


# ---- IDX ------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (the MNIST format; gzip if the name ends in ``.gz``) as a numpy array.

    Layout: two zero bytes, a dtype code, the number of dimensions d, d big-endian uint32
    sizes, then the data big-endian in C order. Raises DataError for any other layout.
    """
    p = Path(path)
    try:
        raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no such IDX file: {p}") from None
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {p}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{p}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{p}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise DataError(f"{p}: IDX data has {len(body)} bytes, its header needs {expected}")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    dotted = stem.replace("-idx", ".idx")  # both spellings circulate
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise DataError(f"MNIST file {stem}[.gz] not found in {directory}")


# ---- builders -------------------------------------------------------------------------------


def _split_indices(n: int, val_fraction: float, test_fraction: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[Tensor]:
    mean, std = float(train.mean()), float(train.std()) or 1.0
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)).unsqueeze(-1)
            for a in (train, *others)]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) float32 in 0..16, labels (1797,) int64) from scikit-learn's bundled
    CSV, read directly: importing ``sklearn.datasets`` costs seconds (it pulls in SciPy)."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for root in locations:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            table = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return table[:, :-1], table[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn (pip install "
                        "'ssmcompile[train]')") from None
    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def load_digits_task(*, upsample: bool = False, val_fraction: float = 0.1,
                     test_fraction: float = 0.2, seed: int = 0) -> TaskData:
    """Sequential digits: 1,797 images, 10 classes, L = 64 (or 256 when ``upsample``)."""
    pixels, target = _digits_arrays()
    images = pixels.reshape(-1, 8, 8) / 16.0  # (N, 8, 8) in [0, 1]
    if upsample:
        t = torch.nn.functional.interpolate(torch.from_numpy(images)[:, None], size=(16, 16),
                                            mode="bilinear", align_corners=False)
        images = t[:, 0].numpy()
    seqs = images.reshape(len(images), -1)
    labels = torch.from_numpy(target)
    tr, va, te = _split_indices(len(seqs), val_fraction, test_fraction, seed)
    x_tr, x_va, x_te = _standardise(seqs[tr], seqs[va], seqs[te])
    name = "digits16" if upsample else "digits"
    return TaskData(name, "classify", Split(x_tr, labels[tr]), Split(x_va, labels[va]),
                    Split(x_te, labels[te]), n_classes=10, d_input=1)


def load_mnist_task(directory: str | os.PathLike[str], *, val_fraction: float = 0.1,
                    seed: int = 0) -> TaskData:
    """Sequential MNIST (L = 784) from the four IDX files in ``directory``; the validation set
    is a seeded slice of the training images, the test set is t10k."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"MNIST directory not found: {d}")
    tr_x = read_idx(_find(d, "train-images-idx3-ubyte"))
    tr_y = read_idx(_find(d, "train-labels-idx1-ubyte"))
    te_x = read_idx(_find(d, "t10k-images-idx3-ubyte"))
    te_y = read_idx(_find(d, "t10k-labels-idx1-ubyte"))
    if tr_x.ndim != 3 or te_x.ndim != 3 or len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise DataError(f"{d}: MNIST image and label files do not match")
    flat = (tr_x.reshape(len(tr_x), -1) / 255.0, te_x.reshape(len(te_x), -1) / 255.0)
    tr, va, _ = _split_indices(len(flat[0]), val_fraction, 0.0, seed)
    x_tr, x_va, x_te = _standardise(flat[0][tr], flat[0][va], flat[1])
    y = torch.from_numpy(tr_y.astype(np.int64))
    return TaskData("mnist", "classify", Split(x_tr, y[tr]), Split(x_va, y[va]),
                    Split(x_te, torch.from_numpy(te_y.astype(np.int64))), n_classes=10,
                    d_input=1)


def load_text_task(path: str | os.PathLike[str], *, seq_len: int = 128,
                   val_fraction: float = 0.05, test_fraction: float = 0.05) -> TaskData:
    """Character-level LM: the file is cut into contiguous train/val/test parts (in that order)
    and each into windows of ``seq_len`` + 1 characters (inputs [:-1], targets [1:])."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no such text file: {p}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read text file {p}: {err}") from None
    vocab = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    n_val, n_test = int(len(ids) * val_fraction), int(len(ids) * test_fraction)
    parts = (ids[:len(ids) - n_val - n_test], ids[len(ids) - n_val - n_test:len(ids) - n_test],
             ids[len(ids) - n_test:])
    splits = []
    for part in parts:
        n = (len(part) - 1) // seq_len
        if n < 1:
            raise DataError(f"{p}: too short for seq_len {seq_len} and the val/test fractions")
        windows = torch.stack([part[i * seq_len:(i + 1) * seq_len + 1] for i in range(n)])
        splits.append(Split(windows[:, :-1].contiguous(), windows[:, 1:].contiguous()))
    return TaskData("text", "lm", *splits, n_classes=len(vocab), vocab_size=len(vocab),
                    vocab=vocab)


def load_task(cfg: DataConfig) -> TaskData:
    """The dataset a ``DataConfig`` names."""
    if cfg.dataset == "digits":
        return load_digits_task(upsample=cfg.upsample, val_fraction=cfg.val_fraction,
                                test_fraction=cfg.test_fraction, seed=cfg.split_seed)
    if cfg.path is None:
        raise DataError(f"dataset {cfg.dataset!r} needs a path")
    if cfg.dataset == "mnist":
        return load_mnist_task(cfg.path, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    if cfg.dataset == "text":
        return load_text_task(cfg.path, seq_len=cfg.seq_len, val_fraction=cfg.val_fraction,
                              test_fraction=cfg.test_fraction)
    raise DataError(f"unknown dataset {cfg.dataset!r}")


# ---- batch order ----------------------------------------------------------------------------


class BatchStream:
    """Deterministic minibatch indices: epoch e visits ``randperm(n)`` drawn from a generator
    seeded with ``seed·1_000_003 + e``, in batches of ``batch_size`` (the tail is dropped so
    every batch has one shape). Under DDP every rank draws the same global batch and keeps the
    rows ``rank::world_size``. The position (epoch, batch index, permutation) is the whole state:
    it never touches the global RNG, so dropout draws and data order are independent.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1 or batch_size > n:
            raise DataError(f"batch size {batch_size} must be in 1..{n} (the training set size)")
        if batch_size % world_size:
            raise DataError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self.perm = self._permutation(0)

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def _permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next_indices(self) -> Tensor:
        """This rank's row indices of the next batch, (batch_size // world_size,) int64."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self.perm = self._permutation(self.epoch)
        start = self.position * self.batch_size
        self.position += 1
        return self.perm[start:start + self.batch_size][self.rank::self.world_size]

    def state(self) -> tuple[dict[str, int], Tensor]:
        """``({"epoch", "position"}, permutation)`` — JSON-able ints and one tensor."""
        return {"epoch": self.epoch, "position": self.position}, self.perm.clone()

    def restore(self, position: dict[str, int], perm: Tensor) -> None:
        """Continue from a saved ``state()``; the permutation must be the one the seed gives."""
        epoch = int(position["epoch"])
        expected = self._permutation(epoch)
        if perm.shape != expected.shape or not torch.equal(perm, expected):
            raise DataError("saved data permutation does not match this dataset and seed")
        self.epoch, self.position, self.perm = epoch, int(position["position"]), expected


__all__ = ["DataError", "Split", "TaskData", "read_idx", "load_task", "load_digits_task",
           "load_mnist_task", "load_text_task", "BatchStream"]
