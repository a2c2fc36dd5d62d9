"""Atomic file writes: a temp file in the target's directory, flush, fsync, ``os.replace``.

A crash or an error mid-write leaves either the old file or none, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import CheckpointError


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path whose directory exists and is a directory, else CheckpointError."""
    out = Path(path)
    if out.is_dir():
        raise CheckpointError(f"output path is a directory: {out}")
    parent = out.parent
    if not parent.exists():
        raise CheckpointError(f"output directory does not exist: {parent}")
    if not parent.is_dir():
        raise CheckpointError(f"output directory is not a directory: {parent}")
    if not os.access(parent, os.W_OK):
        raise CheckpointError(f"output directory is not writable: {parent}")
    return out


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the directory is fsynced too. Returns the Path."""
    out = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as err:
        raise CheckpointError(f"cannot write to {out.parent}: {err.strerror or err}") from None
    try:
        os.fchmod(fd, _target_mode(out))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot write {out}: {err.strerror or err}") from None
        raise
    _fsync_dir(out.parent)
    return out


def _target_mode(out: Path) -> int:
    """The mode a plainly created file would get (mkstemp makes 0600, unreadable to others):
    the existing file's mode when replacing one, else 0666 minus the umask."""
    if out.exists():
        return out.stat().st_mode & 0o777
    umask = os.umask(0)  # reading the umask means setting it; restore at once
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some platforms/filesystems cannot open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
