"""Arm summaries across seeds and the two plots experiments A and B share.

An arm is one configuration run over several seeds: ``full`` (never reduced), ``in-training``
(reduced on the schedule) or ``scratch`` (trained from the start at the final dims of an
in-training run of the same seed). Wall-time ratios are taken per seed against the full run of
that seed — runs of one seed are executed back to back, so they share the machine's load.
"""

from __future__ import annotations

import io
import platform
from pathlib import Path
from typing import Any

import torch
from common import stats

from ssmcompile.io import write_bytes_atomic


def arm_summary(label: str, kind: str, records: list[dict], full: dict[int, dict],
                **params: Any) -> dict[str, Any]:
    """Statistics of one arm's runs (``records``); ``full``: seed → that seed's full run."""
    seeds = [r["spec"]["seed"] for r in records]
    def ratios(key: str) -> list[float]:
        return [r[key] / full[s][key] for r, s in zip(records, seeds, strict=True) if s in full]

    return {
        "arm": label, "kind": kind, "params": params, "seeds": seeds,
        "dims_final": [r["dims_final"] for r in records],
        "total_dim": stats([sum(r["dims_final"]) for r in records]),
        "test_acc": stats([r["test_acc"] for r in records]),
        "best_val_test_acc": stats([r["best_val_test_acc"] for r in records]),
        "wall_s": stats([r["wall_s"] for r in records]),
        "wall_ratio": stats(ratios("wall_s")),
        "cpu_s": stats([r["cpu_s"] for r in records]),
        "cpu_ratio": stats(ratios("cpu_s")),
        "step_s_before": stats([r["step_s_before"] for r in records]),
        "step_s_after": stats([r["step_s_after"] for r in records]),
        "cpu_step_s_before": stats([r["cpu_step_s_before"] for r in records]),
        "cpu_step_s_after": stats([r["cpu_step_s_after"] for r in records]),
        "reduce_s": stats([sum(e["reduce_s"] for e in r["events"]) for r in records]),
        "events": stats([len(r["events"]) for r in records]),
        "load_avg": stats([sum(r["load_avg"]) / 2 for r in records]),
    }


def environment(threads: int) -> dict[str, Any]:
    """What the figures were measured on (recorded with every result file)."""
    import os

    return {"threads": threads, "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def _figure(width: float = 5.2, height: float = 3.6):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def save_figure(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, buf.getvalue())


_STYLE = {"full": ("k", "s"), "in-training": ("tab:blue", "o"), "scratch": ("tab:orange", "^")}


def plot_accuracy_vs_dim(arms: list[dict], path: Path, title: str, threads: int) -> Path:
    """Test accuracy (mean ± std over seeds) against the final total state dimension, with the
    from-scratch arms joined as a curve."""
    fig, ax = _figure()
    for kind, (colour, marker) in _STYLE.items():
        group = sorted((a for a in arms if a["kind"] == kind), key=lambda a: a["total_dim"]["mean"])
        if not group:
            continue
        x = [a["total_dim"]["mean"] for a in group]
        y = [100 * a["test_acc"]["mean"] for a in group]
        xerr = [a["total_dim"]["std"] for a in group]
        yerr = [100 * a["test_acc"]["std"] for a in group]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, color=colour, marker=marker, capsize=3,
                    ls="-" if kind == "scratch" else "none", label=kind)
        if kind == "in-training":
            for a, xi, yi in zip(group, x, y, strict=True):
                ax.annotate(a["arm"].replace("in-training ", ""), (xi, yi), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sorted({round(a["total_dim"]["mean"]) for a in arms}))
    ax.set_xlabel("final total state dimension (log)")
    ax.set_ylabel("test accuracy, % (mean ± std)")
    ax.set_title(f"{title}  [{threads} thread]", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_wall_vs_accuracy(arms: list[dict], path: Path, title: str, threads: int) -> Path:
    """Test accuracy against the run's wall time (mean ± std over seeds), one point per arm:
    the marker says full / in-training / scratch, the colour the rank rule (τ or budget)."""
    fig, ax = _figure()
    rules = sorted({_rule(a) for a in arms if a["params"]})
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    colour_of = dict(zip(rules, palette, strict=False))
    for a in arms:
        _, marker = _STYLE[a["kind"]]
        colour = colour_of.get(_rule(a), "k")
        ax.errorbar(a["wall_s"]["mean"], 100 * a["test_acc"]["mean"],
                    xerr=a["wall_s"]["std"], yerr=100 * a["test_acc"]["std"], color=colour,
                    marker=marker, ms=7, capsize=3, mfc="white" if a["kind"] == "scratch" else
                    colour)
    for kind, (_, marker) in _STYLE.items():
        ax.plot([], [], color="grey", marker=marker, ls="none", label=kind,
                mfc="white" if kind == "scratch" else "grey")
    for rule, colour in colour_of.items():
        ax.plot([], [], color=colour, lw=4, label=rule)
    ax.set_xlabel("training wall time, s")
    ax.set_ylabel("test accuracy, % (mean ± std)")
    ax.set_title(f"{title}  [{threads} thread]", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def _rule(arm: dict) -> str:
    return ", ".join(f"{'τ' if k == 'tau' else k}={v}" for k, v in sorted(arm["params"].items()))


__all__ = ["arm_summary", "environment", "save_figure", "plot_accuracy_vs_dim",
           "plot_wall_vs_accuracy"]
