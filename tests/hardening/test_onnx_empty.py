"""ONNX graphs on empty inputs (issue 17, item 6): batch 0 and length 0 give an empty output of
the right shape, never a crash. onnxruntime's Scan used to kill the process with SIGFPE there,
so every graph runs in a SUBPROCESS of its own and a signal shows up as a failed test, not a
dead pytest. Every graph kind the exporter builds is covered: the diagonal scan per step and
chunked (MatMul and elementwise carry), the dense scan chunked and per step, a rank-1 reduced
model, the selective (Mamba-1 and Mamba-2) scans, and a step graph (no length axis: batch 0
only; linear attention exports step graphs only, built the same way). A normal input still
matches PyTorch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from ssmcompile.api import reduce  # noqa: E402
from ssmcompile.export import export_onnx  # noqa: E402
from ssmcompile.layers import ModelSpec, build_model  # noqa: E402

EMPTY = ((0, 5), (2, 0), (0, 0))  # (batch, length)
NORMAL = ((2, 9), (3, 37))  # shorter than one chunk of 32, and a chunk plus a remainder
RUNNER = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    for feeds_path in sys.argv[2:]:
        feeds = dict(np.load(feeds_path))
        outs = session.run(None, feeds)
        np.savez(feeds_path[: -len(".npz")] + ".out.npz", *outs)
""")


@dataclass(frozen=True)
class Graph:
    model: torch.nn.Module
    step: bool = False
    scan_chunk: int | None = None
    d_input: int | None = None  # float features; None: token ids
    vocab: int = 11


def _lru_classify() -> torch.nn.Module:
    # n = 3: the chunk carry is one MatMul; n = 70: the elementwise carry (onnx_scan)
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(3, 70), d_output=2, d_input=2)
    return build_model(spec).eval()


def _small_lru() -> torch.nn.Module:
    spec = ModelSpec(layer="lru", d_model=4, state_dims=(3,), d_output=2, d_input=2)
    return build_model(spec).eval()


def _dense_lm() -> torch.nn.Module:
    # n = 4: chunked; n = 70: above DENSE_MAX_CHUNK_WIDTH, so the per-step body
    spec = ModelSpec(layer="dense", d_model=8, state_dims=(4, 70), d_output=7, task="lm",
                     vocab_size=11, norm="layer")
    return build_model(spec).eval()


def _rank_one() -> torch.nn.Module:
    spec = ModelSpec(layer="s5", d_model=8, state_dims=(6,), d_output=7, task="lm",
                     vocab_size=11, norm="layer")
    full = build_model(spec).eval()
    reduced, _ = reduce(full, torch.randint(0, 11, (2, 32)), rank=1)
    assert reduced.state_dims == (1,)
    return reduced.eval()


def _selective(structure: str) -> torch.nn.Module:
    from ssmcompile.selective import LMConfig, SelectiveLM

    return SelectiveLM(LMConfig(30, 16, 1, structure, 8, head_dim=8, n_groups=2)).eval()


BUILDERS = {
    "diagonal-per-step": lambda: Graph(_lru_classify(), scan_chunk=1, d_input=2),
    "diagonal-chunked": lambda: Graph(_lru_classify(), d_input=2),
    "dense-chunked-and-per-step": lambda: Graph(_dense_lm()),
    "rank-1": lambda: Graph(_rank_one()),
    "mamba1": lambda: Graph(_selective("mamba1"), vocab=30),
    "mamba2": lambda: Graph(_selective("mamba2"), vocab=30),
    "ssm-step": lambda: Graph(_small_lru(), step=True, d_input=2),
}


def _tokens_or_features(graph: Graph, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if graph.d_input is None:
        return torch.randint(0, graph.vocab, shape, generator=gen)
    return torch.randn(*shape, graph.d_input, generator=gen)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    graph = BUILDERS[request.param]()
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    kwargs = {} if graph.scan_chunk is None else {"scan_chunk": graph.scan_chunk}
    example = _tokens_or_features(graph, (2, 16), 0)
    result = export_onnx(graph.model, path, step=graph.step, example_inputs=example, **kwargs)
    return request.param, graph, result


def run_in_subprocess(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """onnxruntime's outputs for each feed dict, from a child process (a signal cannot kill
    pytest); fails the test with the child's exit status and stderr if it dies."""
    files = []
    for k, feed in enumerate(feeds):
        files.append(path.with_name(f"feeds{k}.npz"))
        np.savez(files[-1], **feed)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(path), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    outs = []
    for f in files:
        with np.load(f.with_name(f.name[: -len(".npz")] + ".out.npz")) as data:
            outs.append([data[f"arr_{i}"] for i in range(len(data.files))])
    return outs


def _sequence_feeds(graph: Graph, sizes) -> list[dict[str, np.ndarray]]:
    return [{"u": _tokens_or_features(graph, size, sum(size)).numpy()} for size in sizes]


def _step_feeds(graph: Graph, result, batches) -> list[dict[str, np.ndarray]]:
    feeds = []
    for seed, batch in enumerate(batches):
        gen = torch.Generator().manual_seed(seed)
        feed = {"u_k": _tokens_or_features(graph, (batch, 1), seed)[:, 0].numpy()}
        for name, shape in result.state_shapes:
            feed[name] = (0.1 * torch.randn(batch, *shape[1:], generator=gen)).numpy()
        feeds.append(feed)
    return feeds


def test_empty_inputs_give_empty_outputs_and_normal_ones_match_torch(exported):
    kind, graph, result = exported
    if graph.step:
        batches = (0, 3)
        feeds = _step_feeds(graph, result, batches)
        outs = run_in_subprocess(result.path, feeds)
        for batch, got in zip(batches, outs, strict=True):
            assert len(got) == len(result.output_names)
            assert all(o.shape[0] == batch for o in got), [o.shape for o in got]
            assert all(np.isfinite(o).all() for o in got)
        assert got[0].size > 0 and np.abs(got[0]).max() > 0  # batch 3 did real work
        return
    sizes = EMPTY + NORMAL
    outs = run_in_subprocess(result.path, _sequence_feeds(graph, sizes))
    feeds = _sequence_feeds(graph, NORMAL)
    with torch.no_grad():
        want = [graph.model(torch.from_numpy(f["u"])) for f in feeds]
    per_step = want[0].dim() == 3  # lm: (batch, length, d_out); classify: (batch, d_out)
    d_out = want[0].shape[-1]
    for (batch, length), (got,) in zip(sizes, outs, strict=True):
        expect = (batch, length, d_out) if per_step else (batch, d_out)
        assert got.shape == expect, (kind, batch, length, got.shape)
        # a classify graph pools over no steps: onnxruntime's mean of nothing is 0 (finite)
        assert np.isfinite(got).all()
    for (got,), ref in zip(outs[len(EMPTY):], want, strict=True):
        assert got.shape == tuple(ref.shape)
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-4)
        assert np.abs(ref.numpy()).max() > 1e-3  # a real comparison, not zeros against zeros
