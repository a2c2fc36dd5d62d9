"""Bundled selective adapters: mambapy's MambaBlock, transformers' Mamba2Mixer and
FalconMambaMixer, and the Hugging Face round trip ``reduce_hf``.

Tiny random models built from config objects; nothing is downloaded."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

transformers = pytest.importorskip("transformers")
mambapy_mamba = pytest.importorskip("mambapy.mamba")

import passes  # noqa: E402
import ssmcompile  # noqa: E402
from ssmcompile.adapters import adapter_for  # noqa: E402
from ssmcompile.compiler import RankPolicy  # noqa: E402
from ssmcompile.compiler.activations import block_inputs  # noqa: E402
from ssmcompile.errors import CheckpointError, MatchError, RankError  # noqa: E402
from ssmcompile.numerics import energy_rank, hankel_singular_values, truncate  # noqa: E402
from ssmcompile.thirdparty.hf_falcon_mamba import HFFalconMambaMixerAdapter  # noqa: E402
from ssmcompile.thirdparty.hf_mamba2 import HFMamba2MixerAdapter  # noqa: E402
from ssmcompile.thirdparty.hf_models import reduce_hf  # noqa: E402
from ssmcompile.thirdparty.mambapy import MambapyBlockAdapter  # noqa: E402
from ssmcompile.train import ReductionScheduler  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 40
LAYERS = ("backbone.layers.0.mixer", "backbone.layers.1.mixer")
MAMBAPY_LAYERS = ("mamba.layers.0.mixer", "mamba.layers.1.mixer")


class TinyMambapyLM(nn.Module):
    """A user's model around mambapy's ``Mamba``: embedding → Mamba → head."""

    def __init__(self, d_state: int = 8):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.mamba = mambapy_mamba.Mamba(mambapy_mamba.MambaConfig(d_model=16, n_layers=2,
                                                                   d_state=d_state))
        self.head = nn.Linear(16, VOCAB)

    def forward(self, ids):
        return self.head(self.mamba(self.embed(ids)))


def _mambapy():
    torch.manual_seed(0)
    return TinyMambapyLM().eval()


def _mamba2(groups: int = 2):
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                    state_size=16, n_groups=groups, head_dim=8, num_heads=8,
                                    expand=2, conv_kernel=4, chunk_size=16)
    return transformers.Mamba2ForCausalLM(cfg).eval()


def _falcon():
    torch.manual_seed(0)
    cfg = transformers.FalconMambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=16,
                                         num_hidden_layers=2, expand=2, conv_kernel=4,
                                         time_step_rank=2)
    return transformers.FalconMambaForCausalLM(cfg).eval()


def _mamba1():
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=16,
                                   num_hidden_layers=2, expand=2, conv_kernel=4,
                                   time_step_rank=2)
    return transformers.MambaForCausalLM(cfg).eval()


MODELS = {"mambapy": _mambapy, "mamba2-g1": lambda: _mamba2(1), "mamba2-g2": _mamba2,
          "falcon": _falcon}
KINDS = {"mambapy": "mambapy-mamba", "mamba2-g1": "hf-mamba2", "mamba2-g2": "hf-mamba2",
         "falcon": "hf-falcon-mamba"}
ADAPTERS = {"mambapy": MambapyBlockAdapter, "mamba2-g1": HFMamba2MixerAdapter,
            "mamba2-g2": HFMamba2MixerAdapter, "falcon": HFFalconMambaMixerAdapter}


@pytest.fixture(scope="module")
def built():
    return {name: make() for name, make in MODELS.items()}


def _names(key):
    return MAMBAPY_LAYERS if key == "mambapy" else LAYERS


def _ids(seed, batch=4, L=32):
    return torch.randint(0, VOCAB, (batch, L), generator=torch.Generator().manual_seed(seed))


def _out(model, ids):
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


def _generate(model, prompt, n):
    """Greedy decoding of exactly n tokens (HF's cached, one-token-at-a-time path)."""
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                          min_new_tokens=n, do_sample=False)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rebuilt(model, names, ids, rank=None):
    """A copy of ``model`` whose mixers the bundled adapter rebuilt at ``rank`` (None: n)."""
    inputs = block_inputs(model, list(names), (ids,))
    new = copy.deepcopy(model)
    for name in names:
        module = new.get_submodule(name)
        adapter = adapter_for(module)
        n = adapter.state_dim(module)
        result = truncate(adapter.calibrate(module, inputs[name]), rank or n, clip=True)
        new.set_submodule(name, adapter.rebuild_from_truncation(module, result))
    return new


# ---- (a) found with no register call ----------------------------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
def test_found_automatically_by_analyze(built, key):
    model = built[key]
    report = ssmcompile.analyze(model, _ids(0))
    rows = {b.name: b for b in report.blocks}
    assert sorted(rows) == sorted(_names(key))
    for name in _names(key):
        row = rows[name]
        assert row.kind == KINDS[key] and row.rule == "registered-layer"
        assert row.state_dim == (8 if key == "mambapy" else 16) and len(row.hsv) > 0
        assert isinstance(adapter_for(model.get_submodule(name)), ADAPTERS[key])
    adapter = adapter_for(model.get_submodule(_names(key)[0]))
    assert adapter.certified is False and hasattr(adapter, "calibrate")
    with pytest.raises(MatchError, match="calibration data"):
        adapter.read(model.get_submodule(_names(key)[0]))


# ---- (b) full rank: same outputs; the rebuild's contract --------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
def test_full_rank_rebuild_leaves_outputs_unchanged(built, key):
    model = built[key]
    before = _snapshot(model)
    state = torch.random.get_rng_state()
    full = _rebuilt(model, _names(key), _ids(0))
    assert torch.equal(state, torch.random.get_rng_state())  # meta build: no RNG draw
    held = _ids(1)
    rel = _rel(_out(full, held), _out(model, held))
    print(f"{key}: full-rank relative output change {rel:.2e}")
    assert rel <= 1e-6
    for name in _names(key):
        old, new = model.get_submodule(name), full.get_submodule(name)
        assert type(new) is type(old) and new is not old and new.training == old.training
        assert {p.dtype for p in new.parameters()} == {p.dtype for p in old.parameters()}
        assert all(p.requires_grad for p in new.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_rebuilt_mixers_keep_dtype_mode_and_parameter_attributes():
    torch.manual_seed(0)
    config = mambapy_mamba.MambaConfig(d_model=16, n_layers=1, d_state=8)
    block = mambapy_mamba.MambaBlock(config).double().train()
    assert block.A_log._no_weight_decay
    u = torch.randn(2, 12, 16, dtype=torch.float64)
    adapter = MambapyBlockAdapter()
    new = adapter.rebuild_from_truncation(block, truncate(adapter.calibrate(block, u), 5))
    assert new.training and new.A_log.dtype == torch.float64 and new.A_log.shape == (32, 5)
    assert new.config.d_state == 5 and block.config.d_state == 8  # a config copy
    assert getattr(new.A_log, "_no_weight_decay", False)  # mambapy's optimizer hint kept
    assert new(u).shape == u.shape


# ---- (c) reduced rank: error measured and reported, no certified bound ------------------------


@pytest.mark.parametrize("key, r", [("mambapy", 4), ("mamba2-g1", 8), ("mamba2-g2", 8),
                                    ("falcon", 8)])
def test_reduced_rank_reports_a_measured_error(built, key, r):
    model = built[key]
    before = _snapshot(model)
    reduced, report = ssmcompile.reduce(model, _ids(0), rank=r)
    rows = {b.name: b for b in report.blocks}
    for name in _names(key):
        row = rows[name]
        assert row.reduced and (row.state_dim, row.rank) == (8 if key == "mambapy" else 16, r)
        assert row.bound is None and row.measured_error is not None  # measured, not certified
        assert 0 < row.measured_error < 0.5
    assert report.output_error is not None and "measured" in str(report)
    held = _ids(1)
    rel = _rel(_out(reduced, held), _out(model, held))
    print(f"{key}: n→{r}: layer errors "
          + ", ".join(f"{rows[n].measured_error:.2e}" for n in _names(key))
          + f"; held-out relative output error {rel:.2e}")
    assert 0 < rel < 0.1
    # (d) the caller's model is bit-identical afterwards
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for name in _names(key):
        assert adapter_for(model.get_submodule(name)).state_dim(model.get_submodule(name)) \
            == (8 if key == "mambapy" else 16)


def test_mamba2_selection_respects_groups(built):
    """With two groups each group keeps its own r indices; in_proj/conv1d sizes follow."""
    model = built["mamba2-g2"]
    reduced, _ = ssmcompile.reduce(model, _ids(0), rank=6)
    mixer = reduced.get_submodule(LAYERS[0])
    I, G, r = mixer.intermediate_size, mixer.n_groups, 6
    assert mixer.ssm_state_size == r and mixer.conv_dim == I + 2 * G * r
    assert mixer.in_proj.weight.shape == (I + I + 2 * G * r + mixer.num_heads, 32)
    assert mixer.conv1d.weight.shape == (I + 2 * G * r, 1, 4)


# ---- (e) reductions inside a user's training loop ---------------------------------------------


def _counting_batch(g, batch=8, L=24):
    """Next-token task: x_{t+1} = x_t + step (mod V), random start and step per sequence."""
    start = torch.randint(0, VOCAB, (batch, 1), generator=g)
    step = torch.randint(1, 4, (batch, 1), generator=g)
    return (start + step * torch.arange(L)) % VOCAB


def _train(model, steps=200, events=(60, 130)):
    g = torch.Generator().manual_seed(0)
    probe = _counting_batch(torch.Generator().manual_seed(99))
    reducer = ReductionScheduler(passes.default_pipeline(RankPolicy(fraction=0.5)), events,
                                 probe, strict=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(steps):
        ids = _counting_batch(g)
        out = model(ids)
        logits = getattr(out, "logits", out)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        model, optimizer, _ = reducer.step(model, optimizer, step + 1)
    return model, reducer, losses


@pytest.mark.parametrize("key, dims", [("mambapy", (8, 4, 2)), ("mamba2-g2", (16, 8, 4)),
                                       ("falcon", (16, 8, 4)), ("mamba1", (16, 8, 4))])
def test_reduction_events_in_a_user_training_loop(key, dims):
    model, reducer, losses = _train(_mamba1() if key == "mamba1" else MODELS[key]())
    assert [a.step for a in reducer.applied] == [60, 130] and not reducer.skipped
    for a, (n, r) in zip(reducer.applied, zip(dims, dims[1:], strict=False), strict=True):
        assert set(a.dims_before.values()) == {n} and set(a.dims_after.values()) == {r}
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"{key}: loss {first:.3f} → {last:.3f}, events "
          + "; ".join(a.summary() for a in reducer.applied))
    assert last < first
    sizes = {adapter_for(model.get_submodule(n)).state_dim(model.get_submodule(n))
             for n in _names(key)}
    assert sizes == {dims[-1]}


# ---- (f) HF Mamba2: smaller config, save / load / generate; mambapy: classes and reload -------


def test_hf_mamba2_state_size_16_to_8_round_trip(built, tmp_path):
    model = built["mamba2-g2"]
    before = _snapshot(model)
    reduced, report = reduce_hf(model, _ids(0), rank=8)
    assert reduced.config.state_size == 8 and model.config.state_size == 16
    assert all(reduced.get_submodule(n).ssm_state_size == 8 for n in LAYERS)
    assert "config.state_size 16 → 8" in report.notes[-1]
    held = _ids(1)
    ref, out = _out(model, held), _out(reduced, held)
    rel = _rel(out[:, -1], ref[:, -1])
    print(f"hf-mamba2 16→8: next-token logits relative error {rel:.2e} (whole sequence "
          f"{_rel(out, ref):.2e}); report output error {report.output_error:.2e}")
    assert 0 < rel < 0.05

    reduced.save_pretrained(tmp_path / "m2")
    back = transformers.Mamba2ForCausalLM.from_pretrained(tmp_path / "m2").eval()
    assert back.config.state_size == 8
    conv = reduced.get_submodule(LAYERS[0]).conv1d.weight
    assert back.get_submodule(LAYERS[0]).conv1d.weight.shape == conv.shape == (64 + 4 * 8, 1, 4)
    assert torch.equal(_out(back, held), out)
    prompt = held[:1, :8]
    tokens = _generate(back, prompt, 4)
    assert tokens.shape == (1, 12) and torch.equal(tokens[:, :8], prompt)
    assert torch.equal(_generate(reduced, prompt, 4), tokens)
    # The cached one-token steps of the rebuilt mixers agree with full-sequence forwards.
    eos = torch.tensor(back.generation_config.eos_token_id).reshape(-1)
    seq = prompt
    for _ in range(4):
        logits = _out(back, seq)[:, -1]
        logits[:, eos] = -torch.inf  # min_new_tokens masks EOS the same way
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq, tokens)
    for k, v in model.state_dict().items():  # (d) the caller's model is untouched
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("key", ["mamba2-g1", "mamba2-g2", "falcon"])
def test_full_rank_generate_gives_the_original_tokens(built, key):
    model = built[key]
    prompt = _ids(3, batch=2, L=8)
    want = _generate(model, prompt, 5)
    full = _rebuilt(model, LAYERS, _ids(0))
    assert torch.equal(_generate(full, prompt, 5), want)
    same, _ = reduce_hf(model, _ids(0), rank=16)
    assert same is not model and same.config.state_size == 16
    assert torch.equal(_generate(same, prompt, 5), want)


def test_hf_falcon_mamba_round_trip(built, tmp_path):
    model = built["falcon"]
    reduced, report = reduce_hf(model, _ids(0), rank=8)
    assert any("RMS norms" in note for note in report.notes)
    mixer = reduced.get_submodule(LAYERS[0])
    assert mixer.config is reduced.config and mixer.b_layernorm.weight.shape == (8,)
    reduced.save_pretrained(tmp_path / "falcon")
    back = transformers.FalconMambaForCausalLM.from_pretrained(tmp_path / "falcon").eval()
    held = _ids(1)
    assert back.config.state_size == 8 and torch.equal(_out(back, held), _out(reduced, held))
    assert _generate(back, held[:1, :6], 3).shape == (1, 9)


def test_per_layer_ranks_refuse_hugging_face_saving(built, tmp_path):
    model = built["mamba2-g2"]
    # A τ at which the two layers' energy rules ask for different ranks (as the policy sees
    # them: the adapter's surrogate, its HSVs, the energy rule).
    inputs = block_inputs(model, list(LAYERS), (_ids(0),))
    hsvs = []
    for name in LAYERS:
        system = HFMamba2MixerAdapter().calibrate(model.get_submodule(name), inputs[name])
        hsvs.append(hankel_singular_values(system.A, system.B, system.C))
    taus = [k / 100 for k in range(2, 60)]
    tau = next(t for t in taus if len({energy_rank(h, t) for h in hsvs}) > 1
               and max(energy_rank(h, t) for h in hsvs) < 15)
    reduced, report = reduce_hf(model, _ids(0), tau=tau, per_layer=True)
    sizes = [reduced.get_submodule(n).ssm_state_size for n in LAYERS]
    assert len(set(sizes)) == 2 and "save_pretrained refused" in report.notes[-1]
    with pytest.raises(CheckpointError) as err:
        reduced.save_pretrained(tmp_path / "per-layer")
    message = str(err.value)
    assert "\n" not in message and "per_layer=False" in message and "uniform" in message
    assert not (tmp_path / "per-layer").exists()
    assert _generate(reduced, _ids(1)[:1, :6], 3).shape == (1, 9)
    uniform, _ = reduce_hf(model, _ids(0), tau=tau)
    assert uniform.config.state_size == max(sizes)  # the default: the neediest layer's rank


def test_mambapy_reduction_keeps_mambapy_classes_and_reloads(built):
    model = built["mambapy"]
    reduced, _ = ssmcompile.reduce(model, _ids(0), rank=4)
    assert type(reduced) is TinyMambapyLM and type(reduced.mamba) is mambapy_mamba.Mamba
    for layer in reduced.mamba.layers:
        assert type(layer) is mambapy_mamba.ResidualBlock
        assert type(layer.mixer) is mambapy_mamba.MambaBlock
        assert layer.mixer.config.d_state == 4 and layer.mixer.A_log.shape == (32, 4)
    fresh = TinyMambapyLM(d_state=4).eval()
    fresh.load_state_dict(reduced.state_dict())
    held = _ids(1)
    assert torch.equal(_out(fresh, held), _out(reduced, held))
    # mambapy's own step mode runs on the reduced block
    block = reduced.mamba.layers[0].mixer
    y, (h, _) = block.step(torch.randn(2, 16), (None, torch.zeros(2, 32, 3)))
    assert y.shape == (2, 16) and h.shape == (2, 32, 4)


# ---- (g) reduce_hf refuses what is not a Hugging Face Mamba model -----------------------------


@pytest.mark.parametrize("make", [lambda: nn.Linear(3, 3), _mambapy, lambda: "model"])
def test_reduce_hf_on_a_non_hf_model_is_a_one_line_match_error(make):
    with pytest.raises(MatchError) as err:
        reduce_hf(make(), _ids(0), rank=4)
    assert "\n" not in str(err.value) and "Hugging Face" in str(err.value)


def test_reduce_hf_argument_errors(built):
    model = built["mamba2-g1"]
    with pytest.raises(RankError, match="exactly one"):
        reduce_hf(model, _ids(0))
    with pytest.raises(RankError, match="1..16"):
        reduce_hf(model, _ids(0), rank=17)
    quick, report = reduce_hf(model, _ids(0), rank=8, verify=False)
    assert quick.config.state_size == 8 and report.output_error is None
    assert all(b.measured_error is None for b in report.blocks)
