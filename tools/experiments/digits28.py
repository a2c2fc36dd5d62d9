"""Sequential digits at the sMNIST shape: scikit-learn's bundled 8×8 digits bilinearly
upsampled to 28×28 (L = 784) and written as MNIST IDX files, so the trainer's own ``mnist``
loader reads them (no download; the files are rebuilt deterministically, never committed).

The split matches the trainer's 16×16 digits task (seeded permutation, 20 % test): the test
images go to the ``t10k`` files, the rest to ``train`` (the loader takes its validation slice
from those). Pixels are quantised to uint8 as in MNIST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SIZE = 28
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX layout: 0, 0, dtype code 0x08 (uint8), ndim, big-endian uint32 sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def digits_images(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) uint8 images and (N,) labels of all 1,797 digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.data.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0)
    up = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                         align_corners=False)[:, 0].numpy()
    return np.clip(np.rint(up * 255.0), 0, 255).astype(np.uint8), bunch.target.astype(np.uint8)


def write_digits_idx(directory: Path, size: int = SIZE) -> Path:
    """The four IDX files in ``directory`` (created; rewritten only when absent)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if all((directory / n).is_file() for n in names):
        return directory
    images, labels = digits_images(size)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_test = int(round(TEST_FRACTION * len(images)))
    test, train = perm[:n_test], perm[n_test:]
    arrays = (images[train], labels[train], images[test], labels[test])
    for name, array in zip(names, arrays, strict=True):
        tmp = directory / f".{name}.partial"
        tmp.write_bytes(_idx_bytes(array))
        tmp.replace(directory / name)
    return directory
