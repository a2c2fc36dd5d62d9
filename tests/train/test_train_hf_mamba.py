"""A Hugging Face ``MambaForCausalLM`` (random weights, no download) trains as a language model
through the trainer with one data-driven reduction event of its mixers (the bundled
``hf-mamba`` adapter: calibrated, measured), resumes bit-exactly after SIGKILL right after
the event, and its reduced checkpoint reloads onto a fresh ``MambaForCausalLM`` at the reduced
size with identical logits — the history replayed through the adapter's rebuild."""

from __future__ import annotations

import signal

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from hf_user_model import MIXERS, lm_data, make_hf_mamba, trainer_options  # noqa: E402
from kill_resume import assert_same_final_state, last_step, run_driver  # noqa: E402

from ssmcompile.errors import CheckpointError  # noqa: E402
from ssmcompile.io import load_checkpoint  # noqa: E402
from ssmcompile.train.config import load_config  # noqa: E402
from ssmcompile.train.records import TrainRecord, of_kind  # noqa: E402
from ssmcompile.train.trainer import Trainer  # noqa: E402

CONFIG = """
steps = 8
seed = 3
eval_every = 4
log_every = 4
checkpoint_every = 4
probe_size = 8
progress = false
pipeline = "hankel-analysis,balanced-truncation{fraction=0.5},verify"
[data]
batch_size = 16
[schedule]
steps = [3]
"""


@pytest.mark.slow
def test_hf_mamba_trains_reduces_resumes_and_reloads(tmp_path):
    (tmp_path / "run.toml").write_text(CONFIG)
    straight, chain = tmp_path / "straight", tmp_path / "chain"
    config = load_config(tmp_path / "run.toml")
    result = Trainer(config.replace(out_dir=str(straight)), **trainer_options()).fit()

    assert [(e.step, e.block, e.n, e.r) for e in result.history] == [
        (3, name, 8, 4) for name in MIXERS]
    assert result.dims_initial == (8, 8) and result.dims_final == (4, 4)
    assert type(result.model) is transformers.MambaForCausalLM
    assert all(result.model.get_submodule(n).ssm_state_size == 4 for n in MIXERS)
    losses = [r.loss for r in of_kind(result.metrics, TrainRecord)]
    assert losses[-1] < losses[0]  # it learns, through the event

    x = lm_data().val.x[:4]
    loaded, meta = load_checkpoint(straight / "last.safetensors", model=make_hf_mamba)
    assert meta.spec == {"blocks": dict.fromkeys(MIXERS, 4)}
    assert type(loaded) is transformers.MambaForCausalLM
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight  # still tied
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x).logits, result.model.eval()(x).logits)
    with pytest.raises(CheckpointError) as err:  # a model the history does not fit
        load_checkpoint(straight / "last.safetensors", model=lambda: make_hf_mamba(6))
    assert MIXERS[0] in str(err.value) and "\n" not in str(err.value)

    # SIGKILL mid-step after the event (last checkpoint: step 4, reduced), then resume
    options = "hf_user_model:trainer_options"
    assert run_driver(tmp_path, chain, False, options, KILL_STEP="6") == -signal.SIGKILL
    assert last_step(chain) == 4
    Trainer(config.replace(out_dir=str(chain)), resume=True, **trainer_options()).fit()
    assert_same_final_state(straight, chain, model=make_hf_mamba)
