"""Atomic file writes: a temp file in the target's directory, flush, fsync, ``os.replace``.

A crash or an error mid-write leaves either the old file or none, never a half-written one.
Temp files carry our own suffix and the writer's pid (``.NAME.PID-XXXX.ssmcompile-tmp``), so a
later write to the same place removes what a killed writer left, and nothing that is not ours
is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import CheckpointError

TEMP_SUFFIX = ".ssmcompile-tmp"


def is_our_temp(path: Path) -> bool:
    """Whether ``path`` is named like a temp file of our atomic writes."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def _writer_alive(tmp: Path) -> bool:
    # ".NAME.PID-XXXX.ssmcompile-tmp": the pid sits between the last "." and "-" before the suffix
    stem = tmp.name[: -len(TEMP_SUFFIX)]
    pid_part = stem.rsplit(".", 1)[-1].split("-", 1)[0]
    if not pid_part.isdigit():
        return False
    pid = int(pid_part)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process (or unknowable): leave it
    return True


def remove_stale_temps(directory: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Delete our temp files in ``directory`` (for target ``name`` only, when given) whose
    writer is no longer running; returns what was removed. Other files are never touched."""
    root = Path(directory)
    pattern = f".{name}.*{TEMP_SUFFIX}" if name is not None else f".*{TEMP_SUFFIX}"
    removed = []
    try:
        candidates = list(root.glob(pattern))
    except OSError:
        return removed
    for tmp in candidates:
        if is_our_temp(tmp) and tmp.is_file() and not _writer_alive(tmp):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def make_temp(out: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new temp file beside ``out``, after removing the temps a killed
    writer to ``out`` left behind. Raises CheckpointError when the directory refuses."""
    remove_stale_temps(out.parent, out.name)
    try:
        return tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}-", suffix=TEMP_SUFFIX,
                                dir=out.parent)
    except OSError as err:
        raise CheckpointError(f"cannot write to {out.parent}: {err.strerror or err}") from None


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


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once symlinks are resolved, or,
    both existing, the same inode (a hard link, or a bind mount)."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: fall back to the inode
        pass
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (yet)
        return False


def check_not_input(out: str | os.PathLike[str], inputs, what: str = "output") -> Path:
    """``out`` as a Path, or CheckpointError when writing it would replace one of ``inputs``
    (``None`` entries are skipped); ``what`` names the output in the message."""
    out = Path(out)
    for src in inputs:
        if src is not None and same_file(out, src):
            raise CheckpointError(f"refusing to overwrite the input checkpoint {src}: the {what} "
                                  f"{out} is the same file")
    return out


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the directory is fsynced too. Returns the Path."""
    out = check_output_path(path)
    fd, tmp = make_temp(out)
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
