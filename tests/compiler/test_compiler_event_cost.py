"""What keeps an event's capture and match cheap: the observed run sees two sequences (or the
whole batch when the model cannot run on a cut one), and the manager records each pass's cost."""

from __future__ import annotations

import torch
from torch import nn

import passes
from ssmcompile.compiler import PassManager, RankPolicy, prepare
from ssmcompile.compiler.activations import OBSERVE_BATCH, observe
from ssmcompile.layers import ModelSpec, build_model


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(layer="lru", d_model=4, state_dims=(10,), d_output=2,
                                 d_input=3, norm="layer")).double().eval()


class _WithTable(nn.Module):
    """Takes a second input without a batch dimension: cutting it to two rows breaks it."""

    def __init__(self):
        super().__init__()
        self.inner = _model()

    def forward(self, x, table):
        return self.inner(x + table[: x.shape[1], None])


def test_observed_run_sees_two_sequences():
    x = torch.randn(9, 12, 3, dtype=torch.float64)
    obs = observe(_model(), (x,))
    assert obs.error is None and obs.calls["blocks.0.ssm"].in_shape == (OBSERVE_BATCH, 12, 4)
    assert observe(_model(), (x,), batch=0).calls["blocks.0.ssm"].in_shape == (9, 12, 4)
    assert prepare(_model(), x).blocks[0].in_shape == (OBSERVE_BATCH, 12, 4)


def test_a_model_that_fails_on_cut_inputs_is_observed_on_the_whole_batch():
    x, table = torch.randn(9, 12, 3, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    obs = observe(_WithTable(), (x, table))
    assert obs.error is None and obs.calls["inner.blocks.0.ssm"].in_shape == (9, 12, 4)
    state = prepare(_WithTable(), (x, table))
    assert [b.name for b in state.blocks] == ["inner.blocks.0.ssm"] and not state.failures


def test_manager_records_each_pass_cost():
    x = torch.randn(3, 12, 3, dtype=torch.float64)
    state = PassManager(passes.default_pipeline(RankPolicy(rank=4))).run(
        prepare(_model(), x)).state
    assert [t.spec for t in state.timings] == [s for s, _ in state.history]
    assert all(t.wall_s > 0 and t.cpu_s >= 0 for t in state.timings)
    rederived = [t.rederive_s > 0 for t in state.timings]
    assert rederived == [False, True, False]  # only after the truncation changed the model
