"""The pass manager keeps the IR honest; registries are values; the core names no pass."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from compiler_models import small_model

import passes
import ssmcompile
from ssmcompile.api import prepare, run_pipeline
from ssmcompile.compiler import (
    META_KEY,
    ModulePass,
    PassManager,
    PassRegistry,
    PassResult,
    RankPolicy,
    parse_pipeline,
    pipeline_text,
)
from ssmcompile.errors import PassError


def _x(batch=3, length=17, d=2):
    return torch.randn(batch, length, d, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


@dataclass(frozen=True)
class Spy(ModulePass):
    """Records what it sees: the graph's block module sizes and the cached analyses."""

    name = "spy"
    seen: list = None

    def run(self, state):
        gm = state.capture.graph_module
        sizes = {str(n.target): gm.get_submodule(str(n.target)).state_dim
                 for n in gm.graph.nodes if n.op == "call_module" and
                 str(n.target).endswith(".ssm")}
        metas = [b.node.meta.get(META_KEY) for b in state.blocks]
        self.seen.append((sizes, dict(state.analyses), metas))
        return PassResult(state, modified=False)


def test_graph_is_rederived_and_analyses_dropped_after_a_rewrite():
    seen = []
    pipeline = [passes.HankelAnalysis(), Spy(seen=seen),
                passes.BalancedTruncation(RankPolicy(rank=4)), Spy(seen=seen)]
    model = small_model("lru")
    PassManager(pipeline).run(prepare(model, _x()))
    (before_sizes, before_analyses, before_meta), (after_sizes, after_analyses, after_meta) = seen
    assert before_sizes == {"blocks.0.ssm": 12, "blocks.1.ssm": 10}
    assert set(before_analyses) == {"blocks.0.ssm", "blocks.1.ssm"}
    assert all(m is not None for m in before_meta)
    # the graph the next pass sees is the new model's, and nothing stale is cached on it
    assert after_sizes == {"blocks.0.ssm": 4, "blocks.1.ssm": 4}
    assert after_analyses == {} and after_meta == [None, None]


@dataclass(frozen=True)
class Sneaky(ModulePass):
    """Declared functional, but writes into the model it is given."""

    name = "sneaky"

    def run(self, state):
        with torch.no_grad():
            next(state.model.parameters()).mul_(1.0)
        return PassResult(state, modified=False)


@dataclass(frozen=True)
class Honest(Sneaky):
    name = "honest"
    in_place = True


def test_functional_passes_may_not_mutate_and_no_pass_may_touch_the_caller():
    model = small_model("lru")
    with pytest.raises(PassError, match="declared functional but mutated"):
        run_pipeline(model, _x(), [Sneaky()])
    # an in-place pass may mutate the working model, but never the caller's
    with pytest.raises(PassError, match="mutated the caller's model"):
        run_pipeline(model, _x(), [Honest()])


def test_registry_is_a_value_and_missing_passes_are_clean_errors():
    only_analysis = PassRegistry.of(passes.HankelAnalysis)
    assert [p.name for p in parse_pipeline("hankel-analysis", only_analysis)] == [
        "hankel-analysis"]
    with pytest.raises(PassError, match=r"unknown pass 'verify' \(known: hankel-analysis\)"):
        parse_pipeline("hankel-analysis,verify", only_analysis)
    with pytest.raises(PassError, match="needs a PassRegistry"):
        parse_pipeline("hankel-analysis", None)
    with pytest.raises(PassError, match="kebab-case"):
        PassRegistry.of(type("Bad", (ModulePass,), {"name": "Bad_Name"}))
    # a user's registry drives run_pipeline the same way
    _, report, _ = run_pipeline(small_model("lru"), _x(), "hankel-analysis",
                                registry=only_analysis)
    assert report.pipeline == "hankel-analysis"


def test_registered_third_party_pass_joins_the_default_registry():
    @ssmcompile.register_pass
    @dataclass(frozen=True)
    class CountBlocks(ModulePass):
        name = "count-blocks-test"
        found: int = 0

        def run(self, state):
            return PassResult(state, modified=False)

    assert passes.default_registry()["count-blocks-test"] is CountBlocks
    (p,) = parse_pipeline("count-blocks-test{found=3}", passes.default_registry())
    assert p == CountBlocks(found=3)


@pytest.mark.parametrize("policy", [RankPolicy(rank=5), RankPolicy(tau=0.01, gate=0.9),
                                    RankPolicy(budget=0.5, squared=True),
                                    RankPolicy(overrides={"b": 3, "a": 2})])
def test_default_pipeline_round_trips_through_its_text(policy):
    pipeline = passes.default_pipeline(policy, hinf=True, probe=4)
    text = pipeline_text(pipeline)
    assert parse_pipeline(text, passes.default_registry()) == pipeline
    assert passes.default_pipeline_text(policy, hinf=True, probe=4) == text


def test_core_names_no_concrete_pass():
    """``ssmcompile/`` must not know the passes by name: it imports ``passes`` explicitly."""
    root = Path(ssmcompile.__file__).parent
    names = [cls.name for cls in passes.BUILTIN_PASSES]
    pattern = re.compile("|".join(rf"{re.escape(n)}(?=[{{,\"'`\s]|$)" for n in names
                                  if n != "verify") + r"|['\"`]verify[{'\"`,]")
    hits = [f"{path.relative_to(root)}:{i}" for path in root.rglob("*.py")
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
