"""Checkpoint IO round trips: every layer kind, reduced models whose history replays, wrappers,
the tensor-file API and builder registry. Structure (keys, shapes, dtypes, metadata) and numbers
(bit-identical outputs) are both compared."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch
from torch import nn

from ssmcompile.api import run_pipeline
from ssmcompile.errors import CheckpointError
from ssmcompile.io import (
    FORMAT_VERSION,
    CheckpointMeta,
    ModelBuilder,
    ReductionEvent,
    load_checkpoint,
    load_tensors,
    read_checkpoint_meta,
    register_builder,
    save_checkpoint,
    save_tensors_atomic,
)
from ssmcompile.layers import ModelSpec, build_model

KINDS = ("lru", "s5", "s4d", "dense")


def make_model(kind: str = "lru", dims=(6, 5), seed: int = 0, **spec_kw) -> nn.Module:
    """A tiny model whose weights are not any fresh init (noise added), so a load that silently
    re-initialised instead of loading would be caught."""
    torch.manual_seed(seed)
    kw = {"d_input": 2} if "vocab_size" not in spec_kw else {}
    spec = ModelSpec(layer=kind, d_model=4, state_dims=tuple(dims), d_output=3,
                     **{**kw, **spec_kw})
    model = build_model(spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(("nu_log", "A", "lam_log_neg_re")):  # keep the poles stable
                p.add_(0.01 * torch.randn_like(p))
        for block in model.blocks:  # non-trivial BatchNorm statistics
            norm = getattr(block, "norm", None)
            if isinstance(norm, nn.BatchNorm1d):
                norm.running_mean.uniform_(-0.1, 0.1)
                norm.running_var.uniform_(0.5, 1.5)
    return model.eval()


def probe(model: nn.Module) -> torch.Tensor:
    spec = model.spec
    gen = torch.Generator().manual_seed(1)
    if spec.vocab_size is not None:
        return torch.randint(0, spec.vocab_size, (2, 9), generator=gen)
    p = next(model.parameters())
    return torch.randn(2, 9, spec.d_input, generator=gen, dtype=p.dtype)


def assert_same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k
    x = probe(a)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_every_layer_kind(tmp_path, kind):
    model = make_model(kind)
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict(),
                           extra={"step": "42"})
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert_same_model(model, loaded)
    assert loaded.spec == model.spec
    assert meta.format_version == FORMAT_VERSION and meta.builder == "ssm-model"
    assert meta.spec == model.spec.to_dict() == meta.initial_spec
    assert meta.history == () and meta.extra == {"step": "42"}
    assert set(meta.versions) == {"ssmcompile", "torch", "safetensors", "python"}
    assert meta.versions["torch"] == torch.__version__
    assert read_checkpoint_meta(path) == meta
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temp file left behind


def test_roundtrip_float64_tokens_layernorm(tmp_path):
    model = make_model("s5", dims=(3, 4, 2), vocab_size=11, task="lm", norm="layer").double()
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model,
                                                spec=model.spec.to_dict()))
    assert next(loaded.parameters()).dtype == torch.float64
    assert_same_model(model, loaded)


def reduction_events(state, step: int) -> tuple[ReductionEvent, ...]:
    """Events written here from the truncation results themselves (not the block records the
    library's own ``history_events`` reads), so the replay is checked against an independent
    account of what happened."""
    return tuple(
        ReductionEvent(step=step, block=name, n=res.hsv.shape[-1], r=res.rank,
                       hsv_kept=tuple(res.hsv[..., : res.rank].flatten().tolist()),
                       bound=float(res.bound.max()))
        for name, res in state.rewrites.items()
    )


@pytest.mark.parametrize("kind", ["lru", "s4d"])
def test_reduced_model_history_replays(tmp_path, kind):
    model = make_model(kind, dims=(8, 6))
    x = probe(model)
    initial = model.spec.to_dict()
    history: tuple[ReductionEvent, ...] = ()
    for step, rank in ((10, 5), (20, 3)):  # two compounding events, as in training
        model, _, state = run_pipeline(model, x, f"hankel-analysis,balanced-truncation"
                                                 f"{{rank={rank}}}")
        history += reduction_events(state, step)
    assert model.spec.state_dims == (3, 3)
    path = save_checkpoint(tmp_path / "r.safetensors", model, spec=model.spec.to_dict(),
                           initial_spec=initial, history=history)
    loaded, meta = load_checkpoint(path)
    assert_same_model(model, loaded)
    assert meta.initial_spec["state_dims"] == [8, 6] and meta.spec["state_dims"] == [3, 3]
    assert [(e.block, e.n, e.r, e.step) for e in meta.history] == [
        ("blocks.0.ssm", 8, 5, 10), ("blocks.1.ssm", 6, 5, 10),
        ("blocks.0.ssm", 5, 3, 20), ("blocks.1.ssm", 5, 3, 20)]
    assert meta.history == history
    n_channels = 4 if kind == "s4d" else 1
    assert len(meta.history[0].hsv_kept) == 5 * n_channels


def test_save_refuses_history_that_does_not_replay(tmp_path):
    model = make_model("lru", dims=(6, 5))
    bad = ReductionEvent(step=1, block="blocks.0.ssm", n=7, r=6, hsv_kept=(1.0,), bound=0.1)
    with pytest.raises(CheckpointError, match="resizes from n=7 but the block has n=6"):
        save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict(),
                        history=[bad])
    with pytest.raises(CheckpointError, match="history does not replay"):
        save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict(),
                        initial_spec=model.spec.with_state_dims((9, 5)).to_dict())
    assert os.listdir(tmp_path) == []


def test_save_refuses_nan_and_unstable_and_mismatched_spec(tmp_path):
    model = make_model("dense", dims=(4,))
    spec = model.spec.to_dict()
    wrong_shape = r"'blocks.0.ssm.A' has shape \(4, 4\), the architecture needs \(5, 5\)"
    with pytest.raises(CheckpointError, match=wrong_shape):
        save_checkpoint(tmp_path / "a.safetensors", model,
                        spec=model.spec.with_state_dims((5,)).to_dict())
    with torch.no_grad():
        model.blocks[0].ssm.A.copy_(1.5 * torch.eye(4))
    with pytest.raises(CheckpointError, match=r"blocks.0.ssm is unstable.*1\.5"):
        save_checkpoint(tmp_path / "b.safetensors", model, spec=spec)
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(CheckpointError, match="'head.bias' contains NaN"):
        save_checkpoint(tmp_path / "c.safetensors", model, spec=spec)
    assert os.listdir(tmp_path) == []


def test_wrappers_are_unwrapped(tmp_path):
    model = make_model("lru")
    compiled = torch.compile(model, backend="eager")
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", compiled,
                                                spec=model.spec.to_dict()))
    assert_same_model(model, loaded)

    class Holder(nn.Module):  # looks like DDP's state dict: every key under "module."
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "d.safetensors", Holder(model),
                                                spec=model.spec.to_dict()))
    assert_same_model(model, loaded)


def test_meta_is_read_without_weights(tmp_path):
    model = make_model("s5")
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec)  # spec object
    tensors, metadata = load_tensors(path)
    tensors["head.bias"][0] = float("nan")
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))
    assert read_checkpoint_meta(path).spec == model.spec.to_dict()  # metadata is still fine
    with pytest.raises(CheckpointError, match="'head.bias' contains NaN or Inf"):
        load_checkpoint(path)


def test_load_does_not_touch_global_rng(tmp_path):
    model = make_model("lru")
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict())
    before = torch.get_rng_state()
    load_checkpoint(path)
    assert torch.equal(before, torch.get_rng_state())


def test_metadata_is_json_strings(tmp_path):
    model = make_model("lru")
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict())
    _, metadata = load_tensors(path)
    assert set(metadata) == {"format_version", "builder", "spec", "initial_spec", "history",
                             "versions", "extra"}
    assert json.loads(metadata["format_version"]) == 1
    assert json.loads(metadata["builder"]) == "ssm-model"
    assert json.loads(metadata["spec"])["state_dims"] == [6, 5]


def test_event_and_meta_roundtrip():
    e = ReductionEvent(step=3, block="blocks.1.ssm", n=8, r=2, hsv_kept=(2.0, 1.5), bound=0.25)
    assert ReductionEvent.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    with pytest.raises(CheckpointError, match="0 < r < n"):
        ReductionEvent(step=3, block="b", n=8, r=8, hsv_kept=(), bound=0.0)
    with pytest.raises(CheckpointError, match="needs keys"):
        ReductionEvent.from_dict({"step": 1})
    assert CheckpointMeta(1, "ssm-model", {}, {}).history == ()


def test_tensor_file_roundtrip_and_atomicity(tmp_path):
    tensors = {"w": torch.randn(3, 2), "step": torch.tensor([7]), "z": torch.zeros(0),
               "c": torch.randn(2, dtype=torch.complex64)}
    path = save_tensors_atomic(tmp_path / "t.safetensors", tensors, {"kind": "trainer"})
    got, meta = load_tensors(path)
    assert meta == {"kind": "trainer"} and set(got) == set(tensors)
    for k, t in tensors.items():
        assert got[k].dtype == t.dtype and torch.equal(got[k], t)
    # a failing save leaves the previous file intact and no temp file behind
    with pytest.raises(CheckpointError, match="complex128"):
        save_tensors_atomic(path, {"x": torch.zeros(2, dtype=torch.complex128)}, {})
    with pytest.raises(CheckpointError, match="str to str"):
        save_tensors_atomic(path, {}, {"a": 1})  # type: ignore[dict-item]
    assert os.listdir(tmp_path) == ["t.safetensors"]
    assert set(load_tensors(path)[0]) == set(tensors)


def test_failed_replace_leaves_no_partial_file(tmp_path, monkeypatch):
    model = make_model("lru")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict())
    assert os.listdir(tmp_path) == []  # the temp file was removed too
    monkeypatch.undo()
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec=model.spec.to_dict())
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_custom_builder_registry(tmp_path):
    def build(spec):
        return build_model(ModelSpec.from_dict(spec["inner"]))

    def resize(spec, block, r):
        inner = ModelSpec.from_dict(spec["inner"])
        return {"inner": inner.with_state_dims((r,)).to_dict()}

    register_builder("wrapped-ssm", ModelBuilder(
        build=build, resize=resize,
        state_dims=lambda spec: {"blocks.0.ssm": spec["inner"]["state_dims"][0]}))
    model = make_model("lru", dims=(5,))
    spec = {"inner": model.spec.to_dict()}
    path = save_checkpoint(tmp_path / "w.safetensors", model, builder="wrapped-ssm", spec=spec)
    loaded, meta = load_checkpoint(path)
    assert meta.builder == "wrapped-ssm" and meta.spec == spec
    assert_same_model(model, loaded)
    with pytest.raises(CheckpointError, match="unknown model builder 'nope'"):
        save_checkpoint(tmp_path / "x.safetensors", model, builder="nope", spec=spec)
