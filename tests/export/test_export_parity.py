"""onnxruntime vs PyTorch for every layer kind, full and reduced, sequence and step graphs.

Each export runs ``check=True`` (the library's own parity rows) AND is re-run here by hand on
fresh inputs at lengths the export never saw (shorter than one Scan chunk, a multiple of it, and
neither), so a bug in ``export.check`` cannot hide one in the exporter. Reduced models come from
``ssmcompile.api.reduce(model, x, rank=R)``.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ssmcompile.api import reduce
from ssmcompile.export import DEFAULT_SCAN_CHUNK, export_onnx, graph_stats
from ssmcompile.layers import ModelSpec, build_model

R = 3
# (layer, task, state_dims); lm cases take token ids, classify cases float features.
CASES = {
    "lru-classify": ("lru", "classify", (6, 5)),
    "s5-lm": ("s5", "lm", (6,)),
    "s4d-classify": ("s4d", "classify", (5,)),
    "dense-lm": ("dense", "lm", (6,)),
}
EXPORT_LENGTH = 16


def _spec(layer: str, task: str, dims: tuple[int, ...]) -> ModelSpec:
    if task == "lm":
        return ModelSpec(
            layer=layer,
            d_model=8,
            state_dims=dims,
            d_output=7,
            task="lm",
            vocab_size=11,
            norm="layer",
        )
    return ModelSpec(layer=layer, d_model=8, state_dims=dims, d_output=3, d_input=4)


def _inputs(spec: ModelSpec, batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spec.vocab_size is not None:
        return torch.randint(0, spec.vocab_size, (batch, length), generator=g)
    return torch.randn(batch, length, spec.d_input, generator=g)


@pytest.fixture(scope="module", params=sorted(CASES))
def models(request):
    """(full model, reduced model, spec) with BatchNorm statistics that are not the identity."""
    layer, task, dims = CASES[request.param]
    torch.manual_seed(0)
    spec = _spec(layer, task, dims)
    full = build_model(spec)
    full.train()
    with torch.no_grad():  # a few train-mode passes give BatchNorm non-trivial running stats
        for seed in range(3):
            full(_inputs(spec, 4, 12, seed))
    full.eval()
    reduced, _ = reduce(full, _inputs(spec, 2, 32, 99), rank=R)
    return full, reduced.eval(), spec


def _ort(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_sequence_graph_full_and_reduced_match_torch(models, tmp_path):
    full, reduced, spec = models
    assert reduced.state_dims == (R,) * spec.n_blocks and full.state_dims == spec.state_dims
    outs = {}
    for name, model in (("full", full), ("reduced", reduced)):
        path = tmp_path / f"{name}.onnx"
        result = export_onnx(model, path, check=True, export_length=EXPORT_LENGTH)
        assert result.parity is not None and result.parity.ok
        rows = result.parity.rows
        assert {r.batch for r in rows} == {1, 3}
        assert all(r.length != EXPORT_LENGTH for r in rows) and len({r.length for r in rows}) == 2
        assert result.parity.providers[0] == "CPUExecutionProvider"
        assert result.self_contained and not path.with_name(path.name + ".data").exists()
        assert result.stats.scan_nodes == spec.n_blocks
        # by hand, at lengths and batch sizes the export never saw
        session = _ort(path)
        # shorter than one chunk, a multiple of it, and over two chunks but not a multiple
        for batch, length in ((1, 5), (2, 23), (3, 2 * DEFAULT_SCAN_CHUNK), (2, 77)):
            u = _inputs(spec, batch, length, seed=7)
            (y,) = session.run(None, {"u": u.numpy()})
            with torch.no_grad():
                ref = model(u).numpy()
            assert y.shape == ref.shape
            assert np.abs(y - ref).max() <= 1e-4
            outs[name, batch] = y
    # the reduced file really is the reduced model (not a copy of the full one)
    assert np.abs(outs["full", 2] - outs["reduced", 2]).max() > 1e-5


def test_step_graph_of_reduced_model_has_state_size_r(models, tmp_path):
    _, reduced, spec = models
    path = tmp_path / "step.onnx"
    result = export_onnx(reduced, path, step=True, check=True)
    assert result.parity is not None and result.parity.ok
    assert {r.reference for r in result.parity.rows} == {"step", "state", "forward"}
    proto = onnx.load(str(path))
    dims = {
        i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
        for i in proto.graph.input
    }
    state_inputs = [n for n in dims if n.startswith("state_")]
    per_block = 1 if spec.layer == "dense" else 2
    assert len(state_inputs) == per_block * spec.n_blocks
    for name in state_inputs:
        assert dims[name][-1] == R, (name, dims[name])  # the reduced size, not the original
        assert isinstance(dims[name][0], str)  # dynamic batch
        if spec.layer == "s4d":
            assert dims[name][1] == spec.d_model  # (batch, H, r) per channel
    assert graph_stats(proto).scan_nodes == 0
    assert [o.name for o in proto.graph.output][0] == "y_k"
    # stream by hand from zeros, ORT feeding back its own state, against the full sequence
    session = _ort(path)
    u = _inputs(spec, 2, 11, seed=3)
    state = {n: np.zeros([2, *dims[n][1:]], dtype=np.float32) for n in dims if n != "u_k"}
    ys = []
    for k in range(u.shape[1]):
        y, *new = session.run(None, {"u_k": u[:, k].numpy(), **state})
        state = dict(zip(state, new, strict=True))
        ys.append(y)
    with torch.no_grad():
        ref = reduced(u).numpy()
    streamed = np.stack(ys, axis=1) if spec.task == "lm" else ys[-1]
    assert np.abs(streamed - ref).max() <= 1e-4
