"""Datasets without downloads: the IDX parser (on tiny files written here), digits, text, and
the deterministic batch order."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from ssmcompile.train.data import (
    BatchStream,
    DataError,
    load_digits_task,
    load_mnist_task,
    load_text_task,
    read_idx,
)


def write_idx(path, array: np.ndarray, code: int, big_endian_dtype: str, *, gz: bool = False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    raw = header + array.astype(big_endian_dtype).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("code,dtype", [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"),
                                        (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")])
def test_idx_round_trip_every_dtype(tmp_path, code, dtype):
    rng = np.random.default_rng(0)
    a = (rng.integers(-100, 100, size=(3, 4, 5)) if dtype[1] != "u"
         else rng.integers(0, 255, size=(3, 4, 5))).astype(dtype)
    write_idx(tmp_path / "a.idx", a, code, dtype)
    out = read_idx(tmp_path / "a.idx")
    assert out.shape == (3, 4, 5) and out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, a)


def test_idx_big_endian_and_gzip(tmp_path):
    a = np.array([1, 256, 65536 + 2], dtype=">i4")
    write_idx(tmp_path / "labels.gz", a, 0x0C, ">i4", gz=True)
    raw = gzip.open(tmp_path / "labels.gz").read()
    assert raw[:4] == b"\x00\x00\x0c\x01" and raw[4:8] == b"\x00\x00\x00\x03"
    assert raw[8:12] == b"\x00\x00\x00\x01" and raw[12:16] == b"\x00\x00\x01\x00"
    assert read_idx(tmp_path / "labels.gz").tolist() == [1, 256, 65538]


@pytest.mark.parametrize("payload,match", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "dtype code"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "needs 3"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "needs 1"),
])
def test_idx_rejects_malformed_files(tmp_path, payload, match):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(DataError, match=match):
        read_idx(tmp_path / "bad")
    with pytest.raises(DataError, match="no such"):
        read_idx(tmp_path / "missing")


def test_mnist_from_tiny_idx_directory(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 20), ("t10k", 6)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)),
                  0x08, ">u1")
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n), 0x08,
                  ">u1", gz=True)
    task = load_mnist_task(tmp_path, val_fraction=0.25, seed=0)
    assert task.train.x.shape == (15, 784, 1) and task.val.x.shape == (5, 784, 1)
    assert task.test.x.shape == (6, 784, 1) and task.n_classes == 10
    labels = read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert task.test.y.tolist() == labels.tolist()
    with pytest.raises(DataError, match="not found"):
        load_mnist_task(tmp_path / "nope")


def test_digits_splits_are_fixed_by_seed_and_normalised():
    a, b = load_digits_task(seed=3), load_digits_task(seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.train.x.shape[1:] == (64, 1) and len(a.train) + len(a.val) + len(a.test) == 1797
    assert abs(float(a.train.x.mean())) < 1e-5 and abs(float(a.train.x.std()) - 1) < 1e-3
    c = load_digits_task(seed=4)
    assert not torch.equal(a.train.y, c.train.y)
    assert load_digits_task(upsample=True).train.x.shape[1:] == (256, 1)


def test_text_task_vocab_and_shifted_targets(tmp_path):
    text = "abcab" * 40 + "\nzz"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    task = load_text_task(tmp_path / "t.txt", seq_len=8, val_fraction=0.1, test_fraction=0.1)
    assert task.vocab == "\nabcz" and task.task == "lm" and task.vocab_size == 5
    assert task.train.x.shape[1] == 8
    assert torch.equal(task.train.x[0, 1:], task.train.y[0, :-1])
    decoded = "".join(task.vocab[i] for i in task.train.x[0].tolist())
    assert decoded == text[:8]
    with pytest.raises(DataError, match="too short"):
        load_text_task(tmp_path / "t.txt", seq_len=500)


def test_batch_stream_is_deterministic_and_resumable():
    a = BatchStream(10, 4, seed=7)
    first = [a.next_indices().tolist() for _ in range(5)]  # crosses an epoch (2 batches each)
    assert all(len(b) == 4 for b in first) and len(set(first[0] + first[1])) == 8
    b = BatchStream(10, 4, seed=7)
    for _ in range(3):
        b.next_indices()
    position, perm = b.state()
    c = BatchStream(10, 4, seed=7)
    c.restore(position, perm)
    assert [c.next_indices().tolist() for _ in range(2)] == first[3:5]
    with pytest.raises(DataError, match="permutation"):
        BatchStream(10, 4, seed=8).restore(position, perm)
    ranks = [BatchStream(10, 4, seed=7, rank=r, world_size=2).next_indices().tolist()
             for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(first[0])
    with pytest.raises(DataError, match="divisible"):
        BatchStream(10, 3, seed=0, world_size=2)
