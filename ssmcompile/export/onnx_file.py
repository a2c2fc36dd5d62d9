"""Writing ONNX files atomically and self-contained, and counting their nodes.

The dynamo exporter's own ``ONNXProgram.save`` writes the weights to a side ``<name>.data`` file
even for small models; a deployment artifact is easier to move as ONE file. We serialise the
model proto ourselves with every tensor inline, which protobuf allows up to 2 GiB: below
``INLINE_LIMIT_BYTES`` the ``.onnx`` file is self-contained. Above it the weights go to
``<name>.onnx.data`` next to it (ONNX external data; that side file is written in place, the
``.onnx`` itself still atomically).

Atomicity: the model is written to a temporary file in the destination directory, fsync'ed,
checked (``onnx.checker`` and, on request, onnxruntime parity) and only then ``os.replace``'d
onto the destination, so a failure never leaves a partial or unchecked ``.onnx`` behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..io.atomic import make_temp
from .result import ExportError, GraphStats

# protobuf refuses messages of 2 GiB; keep a margin for the graph itself.
INLINE_LIMIT_BYTES = 1_900_000_000


def graph_stats(model) -> GraphStats:
    """Node counts of an ``onnx.ModelProto``, recursing into Scan/Loop/If bodies."""
    import onnx

    counts = {"total": 0, "Scan": 0, "Loop": 0}

    def walk(graph) -> None:
        for node in graph.node:
            counts["total"] += 1
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return GraphStats(
        top_level_nodes=len(model.graph.node),
        total_nodes=counts["total"],
        scan_nodes=counts["Scan"],
        loop_nodes=counts["Loop"],
    )


def _tensor_bytes(model) -> int:
    total = 0
    for init in model.graph.initializer:
        total += len(init.raw_data) or init.ByteSize()
    return total


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path; ExportError unless it names a file in an existing directory."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"output directory {path.parent} does not exist")
    if path.is_dir():
        raise ExportError(f"output path {path} is a directory")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_model(model, fd: int, tmp: Path, path: Path) -> Path | None:
    """Serialise ``model`` into the temp file ``tmp`` (open as ``fd``), fsync'ed; returns the
    side data file for weights above INLINE_LIMIT_BYTES, else None."""
    import onnx

    if _tensor_bytes(model) < INLINE_LIMIT_BYTES:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        return None
    os.close(fd)
    data_path = path.with_name(path.name + ".data")
    onnx.save_model(
        model,
        tmp,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_path.name,
        size_threshold=0,
    )
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    return data_path


def _os_error(err: OSError, path: Path) -> ExportError:
    # A full or read-only disk is the user's to fix: one line, not a traceback.
    return ExportError(f"cannot write {path}: {err.strerror or err}")


@contextlib.contextmanager
def staged_onnx_file(model, path: Path) -> Iterator[tuple[Path, Path | None]]:
    """Write ``model`` to a temporary file next to ``path``; yield ``(temp, data_path)``.

    On normal exit the temporary file replaces ``path``; on an exception it is removed (and
    ``path`` is left as it was). ``data_path`` is ``None`` when all weights are inline. Temp
    files that killed writers left beside ``path`` are removed first (``io.atomic.make_temp``).
    """
    import onnx

    path = check_output_path(path)
    fd, tmp_name = make_temp(path)
    tmp = Path(tmp_name)
    try:
        try:
            data_path = _write_model(model, fd, tmp, path)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise a deployment
        except OSError as err:
            raise _os_error(err, path) from None
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as err:
            line = (str(err).strip().splitlines() or [""])[0]
            raise ExportError(f"exported model is not valid ONNX: {line}") from None
        yield tmp, data_path
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _os_error(err, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
