"""``hankel-analysis``: Gramians, Hankel singular values and suggested ranks per block."""

from __future__ import annotations

from dataclasses import dataclass

from ssmcompile.compiler import CompileState, ModulePass, PassResult, analyse_block


@dataclass(frozen=True)
class HankelAnalysis(ModulePass):
    """Analyses every matched block of the current model; never changes the model."""

    name = "hankel-analysis"
    in_place = False

    def run(self, state: CompileState) -> PassResult:
        for block in state.blocks:
            analyse_block(state, block)
        return PassResult(state, modified=False)
