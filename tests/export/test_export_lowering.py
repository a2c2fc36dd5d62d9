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


def test_hugging_face_mamba_exports_with_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=40, hidden_size=16, state_size=8,
                                      num_hidden_layers=2, intermediate_size=32,
                                      time_step_rank=4)
    model = transformers.MambaForCausalLM(config).eval()
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    result = export_onnx(model, tmp_path / "hf.onnx", example_inputs=ids, check=True)
    assert [b.kind for b in result.lowered] == ["hf-mamba", "hf-mamba"]
    assert result.stats.scan_nodes == 2  # one Scan per layer: not unrolled
    worst = max(row.max_abs_err for row in result.parity.rows)
    assert worst <= 1e-4, worst
    # the caller's model still runs with its own cache for generation
    out = model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)
