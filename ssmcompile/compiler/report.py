"""The report a pipeline produces: a readable table and a stable JSON shape."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .state import CompileState
from .suspects import no_block_message


@dataclass(frozen=True)
class BlockRow:
    """One block in the report. ``hsv`` is descending (flattened for multi-SISO blocks)."""

    name: str
    kind: str
    rule: str
    state_dim: int
    rank: int
    reduced: bool
    reason: str
    energy_kept: float | None
    bound: float | None
    measured_error: float | None
    hinf_error: float | None
    feeds: tuple[str, ...]
    hsv: tuple[float, ...]
    suggested: tuple[tuple[float, int], ...] = ()
    decided: bool = False
    precision: str | None = None


@dataclass(frozen=True)
class Report:
    capture: str
    pipeline: str
    modified: bool
    blocks: tuple[BlockRow, ...]
    failures: tuple[tuple[str, str, str], ...] = ()
    output_error: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """Plain JSON types (lists, not tuples): the shape ``to_json`` writes."""
        return json.loads(json.dumps(asdict(self)))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def explain(self) -> str:
        """Why candidates did not match (the CLI's ``--explain``)."""
        lines = [f"{name}: [{rule}] {reason}" for name, rule, reason in self.failures]
        if not self.blocks:
            lines.insert(0, self.no_block_note or "no state-space block found")
        elif not lines:
            return "every candidate matched"
        return "\n".join(lines)

    @property
    def no_block_note(self) -> str | None:
        return next((n for n in self.notes if n.startswith("no state-space block")), None)

    def __str__(self) -> str:
        if self.blocks and not any(b.decided for b in self.blocks):
            rows = self._analysis_rows()
        else:
            rows = [("block", "kind", "n → r", "energy kept", "bound", "measured", "note")]
            for b in self.blocks:
                rows.append((
                    b.name or "<model>", b.kind, f"{b.state_dim} → {b.rank}",
                    _fmt_pct(b.energy_kept), _fmt(b.bound), _fmt(b.measured_error),
                    "" if b.reduced else b.reason,
                ))
        head = rows[0]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = [f"pipeline: {self.pipeline or '(none)'}   modified: {self.modified}",
               f"capture: {self.capture}", *(lines if self.blocks else [])]
        if self.output_error is not None:
            out.append(f"model output max abs error: {self.output_error:.3e}")
        verified_in = sorted({b.precision for b in self.blocks if b.precision not in
                              (None, "float64")})
        if verified_in:
            out.append("verified in " + ", ".join(verified_in) + " (the blocks' own precision, "
                       "its rounding allowed: either already within the bound there, or the "
                       "block cannot run in float64)")
        if self.failures:
            out.append(f"{len(self.failures)} candidate(s) not matched (see explain())")
        out += list(self.notes)
        return "\n".join(out)


    def _analysis_rows(self) -> list[tuple[str, ...]]:
        """Analysis only: the spectrum's range and the ranks the energy rule suggests."""
        taus = [tau for tau, _ in self.blocks[0].suggested]
        rows = [("block", "kind", "n", "σ_1", "σ_n", *(f"r(τ={t:g})" for t in taus))]
        for b in self.blocks:
            rows.append((
                b.name or "<model>", b.kind, str(b.state_dim),
                _fmt(b.hsv[0] if b.hsv else None), _fmt(b.hsv[-1] if b.hsv else None),
                *(str(r) for _, r in b.suggested),
            ))
        return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3e}"


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def build_report(state: CompileState, feeds: dict[str, tuple[str, ...]]) -> Report:
    """The report of a finished pipeline: one row per block of the caller's model, read from
    the block records (what happened), the current analyses and the verifications."""
    rows = []
    for b in state.initial_blocks:
        rec = state.records.get(b.name)
        a = state.analyses.get(b.name)
        d = state.decisions.get(b.name)
        v = state.verifications.get(b.name)
        if rec is not None:
            n, r = rec.n_before, rec.rank
        else:
            n = b.adapter.state_dim(state.original.get_submodule(b.name))
            r = d.rank if d else n
        # Analyses are dropped after a rewrite: a reduced block's figures come from its record.
        if rec is not None:
            energy, hsv = rec.energy_kept, rec.hsv_before
        elif a is not None:
            energy = float(a.energy[r - 1])
            hsv = tuple(sorted((float(s) for s in a.hsv.flatten()), reverse=True))
        else:
            energy, hsv = None, ()
        rows.append(BlockRow(
            name=b.name, kind=rec.kind if rec else b.kind, rule=b.rule, state_dim=n, rank=r,
            reduced=rec is not None,
            reason=d.reason if d else ("analysis only" if a else "not analysed"),
            energy_kept=energy,
            bound=v.bound if v is not None else (rec.bound if rec is not None else None),
            measured_error=v.measured if v else None,
            hinf_error=v.hinf if v else None,
            feeds=feeds.get(b.name, ()),
            hsv=hsv,
            suggested=a.suggested if a is not None else (),
            decided=d is not None,
            precision=v.precision if v is not None else None,
        ))
    notes = list(state.notes)
    if not state.initial_blocks:
        notes.insert(0, no_block_message(state.original, state))
    return Report(
        capture=state.capture.note,
        pipeline=",".join(spec for spec, _ in state.history),
        modified=any(m for _, m in state.history),
        blocks=tuple(rows),
        failures=tuple((f.name, f.rule, f.reason) for f in state.failures),
        output_error=state.output_error,
        notes=tuple(notes),
    )
