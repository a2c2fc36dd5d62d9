"""Models whose state-space blocks were written elsewhere export to ONNX: each block is lowered
to ours (checked at lowering time) and the graph matches the caller's model in onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).parents[1] / "compiler"))

from test_compiler_lti_probe import LoopRecurrence, S4DConv  # noqa: E402
from test_compiler_user_models import HeldOutNet  # noqa: E402

from ssmcompile.export import ExportError, export_onnx, lower_for_export  # noqa: E402


class Net(nn.Module):
    def __init__(self, mixer: nn.Module, width: int, out: int):
        super().__init__()
        self.enc = nn.Linear(2, width)
        self.mixer = mixer
        self.head = nn.Linear(out, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.mixer(self.enc(x))))


MODELS = {
    "python-loop": (lambda: Net(LoopRecurrence(3, 5, 2).float(), 3, 2), 2),
    "fft-conv": (lambda: Net(S4DConv(3, 4).float(), 3, 3), 2),
    "user-scan-dataclass": (lambda: HeldOutNet(), 3),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_third_party_blocks_lower_and_export_with_parity(tmp_path, name):
    build, d_in = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 16, d_in)
    result = export_onnx(model, tmp_path / "m.onnx", example_inputs=x, check=True)
    (lowered,) = result.lowered
    assert lowered.lowered_to == "CanonicalSSM" and lowered.rel_error <= 1e-5
    assert result.stats.has_recurrence_node
    worst = max(row.max_abs_err for row in result.parity.rows)
    assert worst <= 1e-4, worst
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_lowering_leaves_our_own_models_alone():
    from ssmcompile.layers import ModelSpec, build_model

    model = build_model(ModelSpec(layer="lru", d_model=4, state_dims=(6,), d_output=2,
                                  d_input=2))
    same, lowered = lower_for_export(model, torch.randn(2, 8, 2))
    assert same is model and lowered == ()


def test_a_lowering_that_changes_outputs_is_refused(monkeypatch):
    from ssmcompile.export import lowering

    def bad(block, module):
        new = lowering.CanonicalSSM(block.adapter.read(module), dtype=torch.float32)
        with torch.no_grad():
            new.D.add_(1.0)
        return new

    monkeypatch.setattr(lowering, "_lower_one", bad)
    torch.manual_seed(0)
    model = MODELS["python-loop"][0]().eval()
    with pytest.raises(ExportError, match="changes its output by"):
        lower_for_export(model, torch.randn(2, 16, 2))


def _lru_pytorch_net():
    from LRU_pytorch import LRU

    return Net(LRU(3, 3, 8), 3, 3)


def _s5_pytorch_net():
    from s5 import S5

    return Net(S5(3, 8), 3, 3)


@pytest.mark.parametrize("build", [_lru_pytorch_net, _s5_pytorch_net],
                         ids=["lru-pytorch", "s5-pytorch"])
def test_third_party_library_layers_export_with_parity(tmp_path, build):
    pytest.importorskip("LRU_pytorch")
    pytest.importorskip("s5")
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, 12, 2)
    result = export_onnx(model, tmp_path / "m.onnx", example_inputs=x, check=True)
    (lowered,) = result.lowered
    assert lowered.name == "mixer" and lowered.rel_error <= 1e-5
    worst = max(row.max_abs_err for row in result.parity.rows)
    assert worst <= 1e-4, worst


def _hf(kind: str):
    transformers = pytest.importorskip("transformers")
    if kind == "mamba":
        config = transformers.MambaConfig(vocab_size=40, hidden_size=16, state_size=8,
                                          num_hidden_layers=2, intermediate_size=32,
                                          time_step_rank=4)
        return transformers.MambaForCausalLM(config)
    if kind == "falcon-mamba":
        config = transformers.FalconMambaConfig(vocab_size=40, hidden_size=16, state_size=8,
                                                num_hidden_layers=2, intermediate_size=32,
                                                time_step_rank=4)
        return transformers.FalconMambaForCausalLM(config)
    config = transformers.Mamba2Config(vocab_size=40, hidden_size=32, state_size=16,
                                       num_hidden_layers=2, n_groups=2, head_dim=8,
                                       num_heads=8, expand=2, chunk_size=8)
    return transformers.Mamba2ForCausalLM(config)


class MambapyLM(nn.Module):
    def __init__(self):
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig

        self.embed = nn.Embedding(40, 16)
        self.mamba = Mamba(MambaConfig(d_model=16, n_layers=2, d_state=8))
        self.head = nn.Linear(16, 40)

    def forward(self, ids):
        return self.head(self.mamba(self.embed(ids)))


@pytest.mark.parametrize("kind", ["mamba", "falcon-mamba", "mamba2", "mamba2-reduced",
                                  "mambapy"])
def test_selective_third_party_models_export_with_parity(tmp_path, kind):
    torch.manual_seed(0)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    if kind == "mambapy":
        pytest.importorskip("mambapy")
        model = MambapyLM().eval()
    elif kind == "mamba2-reduced":
        from ssmcompile.thirdparty.hf_models import reduce_hf

        model, _ = reduce_hf(_hf("mamba2").eval(), ids, rank=8)
        assert model.config.state_size == 8
    else:
        model = _hf(kind).eval()
    result = export_onnx(model, tmp_path / "m.onnx", example_inputs=ids, check=True)
    assert len(result.lowered) == 2 and all(b.rel_error <= 1e-5 for b in result.lowered)
    assert result.stats.scan_nodes == 2  # one Scan per layer: not unrolled
    worst = max(row.max_abs_err for row in result.parity.rows)
    assert worst <= 1e-4, worst
    if kind != "mambapy":  # the caller's model still generates with its own cache
        out = model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
        assert out.shape == (1, 7)


@pytest.mark.parametrize("kind", ["mamba", "falcon-mamba", "mamba2", "mamba2-reduced"])
def test_hugging_face_step_graphs_stream_with_parity(tmp_path, kind):
    from ssmcompile.thirdparty.hf_step import HFStepLM

    torch.manual_seed(0)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    if kind == "mamba2-reduced":
        from ssmcompile.thirdparty.hf_models import reduce_hf

        model, _ = reduce_hf(_hf("mamba2").eval(), ids, rank=8)
    else:
        model = _hf(kind).eval()
    # the streaming view equals the model's own forward, token by token
    lowered, _ = lower_for_export(model, ids)
    stepper = HFStepLM(lowered).eval()
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
        state, got = stepper.initial_state(2), []
        for t in range(ids.shape[1]):
            y, state = stepper.step(ids[:, t], state)
            got.append(y)
    assert float((torch.stack(got, 1) - want).abs().max()) <= 1e-5
    result = export_onnx(model, tmp_path / "step.onnx", example_inputs=ids, step=True,
                         check=True)
    shapes = dict(result.state_shapes)
    n = 8 if kind == "mamba2-reduced" else model.config.state_size
    assert shapes["state_0_ssm"][-1] == shapes["state_1_ssm"][-1] == n  # the reduced size
    worst = max(row.max_abs_err for row in result.parity.rows)
    assert worst <= 1e-4, worst
