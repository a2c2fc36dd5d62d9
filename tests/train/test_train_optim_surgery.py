"""Optimizer after a swap: kept parameters continue bit-exactly, reduced ones start fresh, and
the LR schedule neither moves nor breaks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.train.config import OptimConfig
from ssmcompile.train.optim_surgery import (
    SSM_GROUP,
    make_lr_schedule,
    make_optimizer,
    swap_parameters,
    warmup_cosine,
)
from ssmcompile.train.reducer import reduce_model

BLOCKS = ("blocks.0.ssm", "blocks.1.ssm")
PIPELINE = "hankel-analysis,balanced-truncation{fraction=0.5},verify"


def trained(steps: int = 6):
    torch.manual_seed(0)
    model = build_model(ModelSpec(layer="lru", d_input=1, d_model=8, state_dims=(16, 12),
                                  d_output=4, dropout=0.0))
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, ssm_lr_factor=0.25, warmup_fraction=0.2)
    opt = make_optimizer(model, BLOCKS, cfg)
    sched = make_lr_schedule(opt, 50, cfg)
    x, y = torch.randn(8, 20, 1), torch.randint(0, 4, (8,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    return model, opt, sched, x, y


def test_groups_give_ssm_parameters_their_lr_factor_and_no_weight_decay():
    model, opt, _, _, _ = trained(0)
    ssm_ids = {id(p) for b in BLOCKS for p in model.get_submodule(b).parameters()}
    assert {id(p) for p in opt.param_groups[SSM_GROUP]["params"]} == ssm_ids
    assert all(id(p) not in ssm_ids for p in opt.param_groups[0]["params"])
    assert opt.param_groups[SSM_GROUP]["weight_decay"] == 0.0
    assert opt.param_groups[0]["weight_decay"] == 0.1
    assert opt.param_groups[SSM_GROUP]["initial_lr"] == pytest.approx(0.25 * 1e-2)


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 0.1, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 0.1, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 0.1, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 0.1, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 0.1, 0.2) == pytest.approx(0.2)
    assert warmup_cosine(30, 100, 0.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))


def test_swap_keeps_untouched_state_bit_exactly_and_resets_reduced():
    model, opt, sched, x, y = trained()
    old_params = dict(model.named_parameters())
    before = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in old_params.items()}
    lrs, epoch = [g["lr"] for g in opt.param_groups], sched.last_epoch
    groups = len(opt.param_groups)
    new, applied = reduce_model(model, opt, PIPELINE, x, step=6)
    assert applied is not None and new.state_dims == (8, 6)
    kept, reset = set(applied.swap.kept), set(applied.swap.reset)
    # untouched: encoder, GLU, head, and D (feedthrough is unchanged by truncation)
    assert {"encoder.weight", "head.bias", "blocks.1.glu_w2.weight", "blocks.0.ssm.D"} <= kept
    assert {"blocks.0.ssm.nu_log", "blocks.1.ssm.B_re", "blocks.0.ssm.C_im"} <= reset
    for name, p in new.named_parameters():
        if name in kept:
            assert p is old_params[name]  # same object, so the same state entry
            state = opt.state[p]
            assert set(state) == set(before[name])
            for key, value in before[name].items():
                assert torch.equal(state[key], value), (name, key)
        else:
            assert name in reset and p not in opt.state
    assert len(opt.param_groups) == groups and sched.last_epoch == epoch
    assert [g["lr"] for g in opt.param_groups] == lrs
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in new.parameters()}
    assert not any(p in opt.state for n, p in old_params.items() if n in reset)
    # the old model is untouched (the pipeline never mutates the model being trained)
    assert model.state_dims == (16, 12)


def test_next_step_continues_kept_parameters_exactly_and_restarts_reduced_ones():
    model, opt, sched, x, y = trained()
    twin_model = copy.deepcopy(model)  # the run that never reduced
    twin_opt = make_optimizer(twin_model, BLOCKS, OptimConfig(lr=1e-2, weight_decay=0.1,
                                                              ssm_lr_factor=0.25,
                                                              warmup_fraction=0.2))
    twin_sched = make_lr_schedule(twin_opt, 50, OptimConfig(warmup_fraction=0.2))
    # after LambdaLR(), which resets group lr; deep copy: load_state_dict shares the tensors
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    twin_sched.load_state_dict(sched.state_dict())
    new, applied = reduce_model(model, opt, PIPELINE, x, step=6)
    twin = dict(twin_model.named_parameters())
    torch.manual_seed(1)
    for name, p in new.named_parameters():  # identical gradients for kept parameters
        p.grad = torch.randn_like(p)
        if name in applied.swap.kept:
            twin[name].grad = p.grad.clone()
    for p in twin.values():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    step_before = {n: float(opt.state[p]["step"]) for n, p in new.named_parameters()
                   if n in applied.swap.kept}
    opt.step()
    sched.step()
    twin_opt.step()
    twin_sched.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in twin_opt.param_groups]
    for name, p in new.named_parameters():
        if name in applied.swap.kept:
            assert torch.equal(p, twin[name]), name
            assert float(opt.state[p]["step"]) == step_before[name] + 1
            assert torch.equal(opt.state[p]["exp_avg_sq"], twin_opt.state[twin[name]]["exp_avg_sq"])
        else:  # fresh AdamW: bias-corrected first step of magnitude lr·|g|/(|g|+eps) ≈ lr
            assert float(opt.state[p]["step"]) == 1.0
            assert torch.equal(opt.state[p]["exp_avg"], 0.1 * p.grad)


def test_swap_with_user_optimizer_keeps_groups_and_extras():
    model, _, _, x, _ = trained(0)
    extra = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": list(model.parameters())}, {"params": [extra]}], lr=0.1,
                          momentum=0.9)
    new, applied = reduce_model(model, opt, PIPELINE, x, step=1)
    assert opt.param_groups[1]["params"] == [extra]
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in new.parameters()}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # groups intact: no error
    opt.step()
    sched.step()


def test_swap_parameters_on_identical_models_keeps_everything():
    model, opt, _, _, _ = trained(2)
    clone = copy.deepcopy(model)
    summary = swap_parameters(opt, model, clone)
    assert summary.reset == () and len(summary.kept) == len(list(model.parameters()))
    assert all(p is q for p, q in zip(clone.parameters(), model.parameters(), strict=True))
