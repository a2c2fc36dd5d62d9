"""Hugging Face MambaForCausalLM: reduce d_state, save, load with transformers, compare logits.

Models are built from a small random ``MambaConfig``; nothing is downloaded."""

from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from ssmcompile.errors import CheckpointError, RankError  # noqa: E402
from ssmcompile.selective import selective_scan  # noqa: E402
from ssmcompile.selective.hf import mixer_signals, reduce_hf_mamba, save_hf_mamba  # noqa: E402


@pytest.fixture(scope="module")
def model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=40, hidden_size=16, state_size=16,
                                   num_hidden_layers=2, expand=2, conv_kernel=4,
                                   time_step_rank=2)
    return transformers.MambaForCausalLM(cfg).eval()


def _ids(seed, batch=4, L=48):
    return torch.randint(0, 40, (batch, L), generator=torch.Generator().manual_seed(seed))


def _logits(m, ids):
    with torch.no_grad():
        return m(input_ids=ids).logits


def test_mixer_signals_reproduce_the_mixer(model):
    """Δ, A, B, C as we recompute them, fed to our scan, give the mixer's own output."""
    mixer = model.backbone.layers[0].mixer
    hidden = torch.randn(2, 24, 16)
    delta, A, B, C = mixer_signals(mixer, hidden)
    with torch.no_grad():
        x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
        x = mixer.act(mixer.conv1d(x.transpose(1, 2))[..., :24]).transpose(1, 2)
        y = selective_scan(x, delta, A, B[:, :, None], C[:, :, None]) + mixer.D * x
        ours = mixer.out_proj(y * torch.nn.functional.silu(z))
        theirs = mixer(hidden)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_full_rank_round_trip_and_reduced_checkpoint(model, tmp_path):
    calib, held = _ids(0), _ids(1)
    ref = _logits(model, held)
    full, info = reduce_hf_mamba(model, calib, rank=16)
    assert info.rank == 16 and torch.equal(_logits(full, held), ref)

    reduced, info = reduce_hf_mamba(model, calib, rank=6)
    assert info.rank == 6 and reduced.config.state_size == 6 and model.config.state_size == 16
    assert [k.numel() for k in info.kept] == [6, 6]
    out = _logits(reduced, held)
    rel = float((out - ref).norm() / ref.norm())
    assert 0 < rel < 0.01, rel  # measured ≈ 1e-4 on this random model

    path = save_hf_mamba(reduced, tmp_path / "reduced")
    files = sorted(p.name for p in path.iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    back = transformers.MambaForCausalLM.from_pretrained(path).eval()
    assert back.config.state_size == 6
    assert back.backbone.layers[0].mixer.A_log.shape == (32, 6)
    torch.testing.assert_close(_logits(back, held), out, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="not empty"):
        save_hf_mamba(reduced, path)


def test_tau_rule_and_rank_errors(model):
    reduced, info = reduce_hf_mamba(model, _ids(0), tau=0.05)
    assert reduced.config.state_size == info.rank
    # the rule itself, from the spectra (Σσ energy, max over layers and groups): every layer
    # keeps ≥ 95 % at r, and r − 1 would leave some layer below it
    kept = [(h.cumsum(-1) / h.sum(-1, keepdim=True)).amin(dim=0) for h in info.hsv]
    assert all(float(k[info.rank - 1]) >= 0.95 - 1e-12 for k in kept)
    assert info.rank == 1 or any(float(k[info.rank - 2]) < 0.95 for k in kept)
    with pytest.raises(RankError):
        reduce_hf_mamba(model, _ids(0), rank=17)
    with pytest.raises(RankError, match="exactly one"):
        reduce_hf_mamba(model, _ids(0))


def test_core_pipeline_reduces_hf_mixers(model):
    import ssmcompile
    from ssmcompile.selective.hf import register_hf_adapter

    register_hf_adapter()

    class Logits(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, ids):
            return self.lm(input_ids=ids).logits

    wrapped = Logits(model)
    reduced, report, state = ssmcompile.run_pipeline(
        wrapped, _ids(0), "hankel-analysis,balanced-truncation{rank=6},verify")
    assert [layer.mixer.ssm_state_size for layer in reduced.lm.backbone.layers] == [6, 6]
    assert model.config.state_size == 16 and "hf-mamba" in str(report)
    ref = _logits(model, _ids(1))
    with torch.no_grad():
        out = reduced(_ids(1))
    assert float((out - ref).norm() / ref.norm()) < 0.01


def test_hf_mamba_found_without_registration_and_bad_input_is_one_line(model):
    import ssmcompile
    from ssmcompile.adapters.base import _REGISTRY
    from ssmcompile.errors import MatchError

    mixer_cls = type(model.backbone.layers[0].mixer)
    _REGISTRY.pop(mixer_cls, None)  # as in a fresh process: only the lazy bundle entry
    report = ssmcompile.analyze(model, _ids(0))  # the ModelOutput is read through .logits
    assert [r.kind for r in report.blocks] == ["hf-mamba", "hf-mamba"]
    with pytest.raises(MatchError, match="needs a transformers MambaForCausalLM, got Linear"):
        reduce_hf_mamba(torch.nn.Linear(2, 2), _ids(0), rank=4)
