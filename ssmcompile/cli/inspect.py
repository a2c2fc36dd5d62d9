"""``ssmcompile inspect CKPT``: architecture, reduction history, versions and size of a file.

The checkpoint is fully loaded (and so fully validated) to count its parameters. Text output
passes every string that comes from the file through ``safe_text`` (terminal escapes, lone
surrogates and megabyte-long values must not reach the terminal as they are); ``--json`` keeps
them whole, escaped by JSON itself (``ensure_ascii``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import safe_text
from . import _common

FIELD_LIMIT = 200  # characters of one string from the file in the text output

NAME = "inspect"
HELP = "show a checkpoint's architecture, reduction history and versions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def describe(path: Path, quiet: bool = True) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a JSON-able dict."""
    from ..io import get_builder, load_checkpoint
    from ..io.builders import call_builder

    with _common.progress(quiet, 1, "inspect") as advance:
        advance("loading")
        model, meta = load_checkpoint(path)
    builder = get_builder(meta.builder)
    dims = call_builder("invalid spec", builder.state_dims, meta.spec)
    initial = call_builder("invalid initial_spec", builder.state_dims, meta.initial_spec)
    return {
        "checkpoint": str(path),
        "file_bytes": path.stat().st_size,
        "format_version": meta.format_version,
        "builder": meta.builder,
        # "layer" in ssm-model specs, "structure" (mamba1|mamba2) in selective-lm ones
        "layer": meta.spec.get("layer", meta.spec.get("structure")),
        "d_model": meta.spec.get("d_model"),
        "blocks": [{"name": k, "state_dim": n, "initial_state_dim": initial.get(k)}
                   for k, n in dims.items()],
        "parameters": sum(p.numel() for p in model.parameters()),
        "history": [e.to_dict() for e in meta.history],
        "versions": meta.versions,
        "extra": meta.extra,
        "spec": meta.spec,
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _t(value: object) -> str:
    return safe_text(value, FIELD_LIMIT)


def render_text(d: dict[str, Any]) -> str:
    lines = [
        f"checkpoint: {_t(d['checkpoint'])}  ({_size(d['file_bytes'])}, format "
        f"{d['format_version']})",
        f"builder: {_t(d['builder'])}   layer: {_t(d['layer'])}   d_model: {_t(d['d_model'])}   "
        f"parameters: {d['parameters']:,}",
        "blocks:",
    ]
    for b in d["blocks"]:
        was = b["initial_state_dim"]
        note = f"  (initially {was})" if was is not None and was != b["state_dim"] else ""
        lines.append(f"  {_t(b['name'])}: n = {b['state_dim']}{note}")
    if d["history"]:
        # 2·Σ of the discarded σ: the certified H∞ bound for LTI blocks, only the surrogate's
        # tail for data-driven (measured) ones, so the column does not claim "bound".
        lines.append("reduction history (2·Σtail: an H∞ bound for LTI blocks only):")
        lines.append(f"  {'step':>8}  {'block':<16} {'n -> r':>10}  {'2·Σtail':>10}  kept sigma")
        for e in d["history"]:
            kept = e["hsv_kept"]
            span = f"{kept[0]:.3e} .. {kept[-1]:.3e}" if kept else "-"
            lines.append(f"  {e['step']:>8}  {_t(e['block']):<16} {e['n']:>4} -> {e['r']:<4}"
                         f"  {e['bound']:>10.3e}  {span}")
    else:
        lines.append("reduction history: none")
    lines.append("versions: " + ", ".join(f"{_t(k)} {_t(v)}"
                                          for k, v in sorted(d["versions"].items())))
    if d["extra"]:
        lines.append("extra: " + ", ".join(f"{_t(k)}={_t(v)}"
                                           for k, v in sorted(d["extra"].items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    d = describe(args.checkpoint, getattr(args, "quiet", False))
    print(json.dumps(d) if args.json else render_text(d))
    return 0


def main(argv: list[str] | None = None) -> int:
    return _common.standalone_main(NAME, HELP, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
