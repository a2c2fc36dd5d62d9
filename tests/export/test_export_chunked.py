"""The chunked Scan formulation (``onnx_chunked``): its Toeplitz matrices against the recurrence,
the exported scan ops against the sequential references on hard spectra (slow decay, zero and
negative eigenvalues, a non-normal A) at lengths around the chunk size, every code path (matmul
or elementwise carry, per-layer chunk caps), and the per-layer chunk rule."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import ssmcompile.export.onnx_scan as onnx_scan
from ssmcompile.export import DEFAULT_SCAN_CHUNK, ExportError, export_onnx
from ssmcompile.export.onnx_chunked import dense_kernel_index, diagonal_kernel_index
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.ops import dense_scan, diagonal_scan_real
from ssmcompile.ops.reference import dense_scan_reference, diagonal_scan_reference

CHUNK = 8
# shorter than a chunk, one chunk minus one, exactly one and several chunks, neither, long
LENGTHS = (1, CHUNK - 1, CHUNK, 4 * CHUNK, 5 * CHUNK + 3, 300)


def test_layer_chunk_rule():
    rule = onnx_scan.layer_chunk
    assert rule(32, 16, 4096) == 32 and rule(32, None, 4096) == 32 and rule(1, 16, 4096) == 1
    assert rule(32, 256, 4096) == 16  # capped so that T·n ≤ width
    assert rule(32, 1024, 4096) == 4 and rule(32, 2048, 4096) == 1  # below 4: per step
    assert rule(32, 16, 256) == 16 and rule(32, 64, 256) == 4 and rule(32, 128, 256) == 1
    assert rule(3, 16, 256) == 3  # an explicit small chunk that fits is kept


def _recurrence(lam: np.ndarray, u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x_t = λ x_{t-1} + u_t from x_{-1} = h, all complex; u (T, n), h (n,) → (T, n)."""
    out, x = [], h
    for t in range(u.shape[0]):
        x = lam * x + u[t]
        out.append(x)
    return np.stack(out)


def test_diagonal_kernel_index_builds_the_chunk_solution():
    rng = np.random.default_rng(0)
    T, n = 5, 3
    lam = 0.9 * np.exp(1j * rng.uniform(0, 2 * np.pi, n))
    powers = lam[None] ** np.arange(T + 1)[:, None]  # (T+1, n)
    zero = np.zeros((1, n))
    table = np.concatenate([powers.real, zero, powers.imag, zero, -powers.imag, zero])
    index = diagonal_kernel_index(T)
    assert index.shape == (2 * T, 2 * T + 2)
    matrices = table[index]  # (2T, 2T+2, n)
    u = rng.normal(size=(T, n)) + 1j * rng.normal(size=(T, n))
    h = rng.normal(size=n) + 1j * rng.normal(size=n)
    row = np.concatenate([u.real, u.imag, h.real[None], h.imag[None]])  # (2T+2, n)
    x = np.einsum("rcn,cn->rn", matrices, row)
    expected = _recurrence(lam, u, h)
    np.testing.assert_allclose(x[:T], expected.real, atol=1e-12)
    np.testing.assert_allclose(x[T:], expected.imag, atol=1e-12)
    assert (index[:T, T:] >= 0).all() and index[0, 1] == T + 1  # above the diagonal: zero row


def test_dense_kernel_index_builds_the_chunk_solution():
    rng = np.random.default_rng(1)
    T, n = 4, 3
    A = 0.5 * rng.normal(size=(n, n))
    G = A.T
    table = np.stack([np.linalg.matrix_power(G, k) for k in range(T + 1)] + [np.zeros((n, n))])
    index = dense_kernel_index(T)
    assert index.shape == (T + 1, T)
    kernel = table[index].transpose(0, 2, 1, 3).reshape((T + 1) * n, T * n)
    u, h = rng.normal(size=(T, n)), rng.normal(size=n)
    x = (np.concatenate([u.reshape(-1), h]) @ kernel).reshape(T, n)
    expected, state = [], h
    for t in range(T):
        state = A @ state + u[t]
        expected.append(state)
    np.testing.assert_allclose(x, np.stack(expected), atol=1e-12)


class DiagonalScan(nn.Module):
    """u (batch, L, n) → [x_re | x_im] (batch, L, 2n) for a fixed complex λ (n,)."""

    def __init__(self, lam: torch.Tensor) -> None:
        super().__init__()
        self.lam_re = nn.Parameter(lam.real.float())
        self.lam_im = nn.Parameter(lam.imag.float())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x_re, x_im = diagonal_scan_real(self.lam_re, self.lam_im, u, 0.5 * u.flip(-1))
        return torch.cat([x_re, x_im], -1)

    def reference(self, u: torch.Tensor) -> torch.Tensor:
        lam = torch.complex(self.lam_re, self.lam_im).detach().to(torch.complex128)
        x = diagonal_scan_reference(lam, torch.complex(u, 0.5 * u.flip(-1)).to(torch.complex128))
        return torch.cat([x.real, x.imag], -1)


class DenseScan(nn.Module):
    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.float())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return dense_scan(self.A, u)

    def reference(self, u: torch.Tensor) -> torch.Tensor:
        return dense_scan_reference(self.A.detach().double(), u.double())


def _hard_diagonal(n: int) -> torch.Tensor:
    """Slow decay near the unit circle, λ = 0, negative real, phases near π and 0, fast decay."""
    g = torch.Generator().manual_seed(2)
    fixed = torch.tensor([0.9999 + 0j, 0j, -0.95 + 0j, 0.99 * np.exp(3.1j), 0.999 * np.exp(0.01j)])
    radius = torch.rand(n - len(fixed), generator=g) * 0.999
    phase = torch.rand(n - len(fixed), generator=g) * 2 * np.pi
    return torch.cat([fixed.to(torch.complex64), torch.polar(radius, phase)])


def _non_normal(n: int) -> torch.Tensor:
    """Spectral radius 0.97 but ‖A^k‖ grows first (a shifted Jordan-like block)."""
    return 0.97 * torch.eye(n) + 0.6 * torch.diag(torch.ones(n - 1), 1)


def _run(module: nn.Module, path, n: int) -> tuple[float, float]:
    """(max |error|, max |reference|) over LENGTHS and batch 1 and 3, against float64."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    err = scale = 0.0
    for length in LENGTHS:
        for batch in (1, 3):
            u = torch.randn(batch, length, n, generator=g)
            (y,) = session.run(None, {"u": u.numpy()})
            ref = module.reference(u).numpy()
            assert y.shape == ref.shape, (y.shape, ref.shape)
            err = max(err, float(np.abs(y - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
    return err, scale


def _scan_axes(path) -> list[int]:
    (scan,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Scan"]
    return list({a.name: a for a in scan.attribute}["scan_input_axes"].ints)


@pytest.mark.parametrize(
    "carry_max,width,axes",
    [
        (64, 4096, [2]),  # n = 12 ≤ 64: λ^T as one MatMul over [h_re; h_im]
        (0, 4096, [2, 2]),  # elementwise complex carry (the path of layers with n > 64)
        (64, 12 * 3, [1, 1]),  # chunk capped below 4 for this n: the per-step body
    ],
)
def test_diagonal_scan_on_hard_spectra(carry_max, width, axes, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_scan, "MATMUL_CARRY_MAX_STATES", carry_max)
    monkeypatch.setattr(onnx_scan, "DIAGONAL_MAX_CHUNK_WIDTH", width)
    n = 12
    module = DiagonalScan(_hard_diagonal(n)).eval()
    path = tmp_path / "diag.onnx"
    export_onnx(module, path, example_inputs=torch.randn(2, 16, n), scan_chunk=CHUNK)
    assert _scan_axes(path) == axes
    err, scale = _run(module, path, n)
    assert err <= 1e-4 * max(1.0, scale), (err, scale)  # |x| reaches ~1e2 at λ = 0.9999


@pytest.mark.parametrize("width,axes", [(256, [1]), (4 * 3, [1])])
def test_dense_scan_on_a_non_normal_matrix(width, axes, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_scan, "DENSE_MAX_CHUNK_WIDTH", width)
    n = 6
    module = DenseScan(_non_normal(n)).eval()
    path = tmp_path / "dense.onnx"
    export_onnx(module, path, example_inputs=torch.randn(2, 16, n), scan_chunk=CHUNK)
    stats_nodes = [node.op_type for node in onnx.load(str(path)).graph.node]
    # chunked: the Toeplitz product is a top-level MatMul besides the carry Scan; per step: none
    assert ("MatMul" in stats_nodes) == (width >= CHUNK * n)
    assert _scan_axes(path) == axes
    err, scale = _run(module, path, n)
    assert err <= 1e-4 * max(1.0, scale), (err, scale)


def test_chunked_and_per_step_graphs_agree_and_record_the_chunk(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(70,), d_output=3, d_input=4)
    model = build_model(spec).eval()  # n = 70: elementwise carry inside a real model
    u = torch.randn(2, 3 * DEFAULT_SCAN_CHUNK + 1, 4)
    outs, nodes = {}, {}
    for chunk in (1, DEFAULT_SCAN_CHUNK):
        path = tmp_path / f"c{chunk}.onnx"
        result = export_onnx(model, path, scan_chunk=chunk)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (outs[chunk],) = session.run(None, {"u": u.numpy()})
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["ssmcompile.scan_chunk"] == str(chunk)
        assert result.stats.scan_nodes == 1
        nodes[chunk] = result.stats.total_nodes
    with torch.no_grad():
        ref = model(u).numpy()
    assert np.abs(outs[1] - ref).max() <= 1e-4
    assert np.abs(outs[DEFAULT_SCAN_CHUNK] - ref).max() <= 1e-4
    assert nodes[DEFAULT_SCAN_CHUNK] > nodes[1]  # really the other formulation


@pytest.mark.parametrize("chunk", [0, 257, 2.5, True])
def test_bad_chunk_fails_before_export(chunk, tmp_path):
    model = build_model(ModelSpec(layer="lru", d_model=4, state_dims=(3,), d_output=2, d_input=2))
    with pytest.raises(ExportError, match="scan chunk must be an int"):
        export_onnx(model, tmp_path / "m.onnx", scan_chunk=chunk)
    assert list(tmp_path.iterdir()) == []
