"""``ssmcompile export CKPT -o model.onnx [--step] [--opset N] [--check]``: ONNX deployment.

Writes the sequence graph (dynamic batch and length, recurrences as ONNX ``Scan``) or, with
``--step``, the one-step streaming graph with explicit state inputs/outputs; the file is
self-contained and written atomically. ``--check`` runs it in onnxruntime against PyTorch and
fails (exit 1, no file written) when any output differs by more than ``--tolerance``.
ONNX support comes from the ``onnx`` extra (or ``gpu`` for onnxruntime-gpu, ``--device cuda``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _common

NAME = "export"
HELP = "export a checkpoint to ONNX (sequence graph, or --step for streaming)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--step", action="store_true", help="export one time step with the state as inputs/outputs"
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        metavar="N",
        help="ONNX opset (>= 18; default: the exporter's)",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare onnxruntime with PyTorch on random inputs"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="onnxruntime device for --check (cuda needs onnxruntime-gpu)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max abs error allowed by --check (default 1e-4)",
    )
    parser.add_argument(
        "--length",
        type=int,
        default=16,
        metavar="L",
        help="length traced at export (the graph runs at any length; default 16)",
    )
    parser.add_argument(
        "--scan-chunk",
        type=int,
        default=None,
        metavar="T",
        help="time steps per ONNX Scan iteration in the sequence graph (1 = one step per "
        "iteration; default: the measured default, capped per layer width)",
    )


def check_outputs(checkpoint: Path, output: Path) -> None:
    """CheckpointError, before the slow export, when the output's directory is missing or not
    writable, or when the ``.onnx`` file or the ``.onnx.data`` weights file a large model gets
    beside it would replace the input checkpoint."""
    from ..io.atomic import check_not_input, check_output_path

    check_output_path(output)
    check_not_input(output, [checkpoint], "ONNX output")
    check_not_input(output.with_name(output.name + ".data"), [checkpoint], "ONNX weights file")


def run(args: argparse.Namespace) -> int:
    from ..export import ParityError, export_onnx
    from ..io import load_checkpoint

    check_outputs(args.checkpoint, args.output)
    quiet = bool(getattr(args, "quiet", False))
    with _common.progress(quiet, 2, "export") as advance:
        advance("loading")
        model, _ = load_checkpoint(args.checkpoint)
        advance("exporting and checking" if args.check else "exporting")
        chunk = {} if args.scan_chunk is None else {"scan_chunk": args.scan_chunk}
        try:
            result = export_onnx(
                model,
                args.output,
                step=args.step,
                opset=args.opset,
                check=args.check,
                export_length=args.length,
                device=args.device,
                tolerance=args.tolerance,
                **chunk,
            )
        except ParityError as err:
            report = getattr(err, "report", None)
            if report is not None:
                print("\n".join(report.lines()))
            raise
    print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``ssmcompile export`` on its own (``python -m ssmcompile.cli.export``)."""
    return _common.standalone_main(NAME, HELP, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
