"""One trainer's hold on its run directory: an advisory lock, the run's identity, and the rules
for starting and resuming there.

- The lock (``DIR/.ssmcompile-run.lock``, ``flock``) is held from before the first check until
  the trainer exits; the kernel drops it when the process dies, SIGKILL included, so a killed
  run never blocks its resume, and a second trainer on the same directory is refused at once.
- A fresh run starts only in a missing or empty directory (our lock and our temp files of
  killed writes do not count). ``force`` starts it anyway: the files a run writes
  (``is_run_file``: checkpoints, trainer state, ``run.json``, metrics and plots) are deleted
  first, so no checkpoint of the old run can be resumed or pruned in place of the new run's;
  every other file is left alone.
- A resume needs the run's identity (``run_identity``; runs written before identities get one
  from their newest checkpoint) and a config it accepts. A run killed before its first complete
  checkpoint resumes from step 0, which is what it would have done.
- Setup that fails before the loop removes what it created (the lock file, the directory it
  made), so a refused or failed start leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection
from pathlib import Path

from ..errors import CheckpointError, SSMCompileError, safe_text
from ..io.atomic import is_our_temp, remove_stale_temps
from .config import ConfigError, TrainConfig
from .run_identity import (
    RUN_FILE,
    RUN_ID,
    RunIdentity,
    check_overrides,
    check_resume,
    parse_config_json,
    read_identity,
    validated_config,
    write_identity,
)

try:
    import fcntl
except ImportError:  # not POSIX: no advisory lock
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".ssmcompile-run.lock"
_CHECKPOINT = re.compile(
    r"(last|best|pragmatic(-[0-9]{8})?|step-[0-9]{8})(\.state|\.rank[0-9]{1,6}\.rng)?"
    r"\.safetensors")
_OTHER_RUN_FILES = frozenset({RUN_FILE, "metrics.jsonl", "hsv_spectra.png", "training.png"})


def is_run_file(name: str) -> bool:
    """Whether a run writes a file of this name into its directory."""
    return name in _OTHER_RUN_FILES or _CHECKPOINT.fullmatch(name) is not None


def occupants(root: Path) -> list[str]:
    """Names in ``root`` other than our lock and our temp files (sorted)."""
    try:
        names = sorted(p.name for p in root.iterdir())
    except (FileNotFoundError, NotADirectoryError):  # not there (yet): nothing in it
        return []
    except OSError as err:
        raise CheckpointError(f"cannot list {root}: {err.strerror or err}") from None
    return [n for n in names if n != LOCK_FILE and not is_our_temp(root / n)]


def check_start(config: TrainConfig, *, resume: bool, force: bool,
                override: Collection[str]) -> frozenset[str]:
    """The checks a run passes before it creates anything: options that go together, the
    device, the schedule against the run's length, the compile backend; the override names."""
    import torch

    from .compile import check_backend, should_compile
    from .distributed import check_device

    if resume and config.out_dir is None:
        raise SSMCompileError("resume needs config.out_dir (the run directory)")
    if resume and force:
        raise ConfigError("--resume continues the run in --out and --force starts a new one "
                          "there: give one of them")
    if config.out_dir is not None:
        check_out_path(config.out_dir)
    names = check_overrides(override)
    if names and not resume:
        raise ConfigError("--override changes fields of a resumed run: it needs --resume")
    check_device(config.device)
    config.schedule.event_steps(config.steps)
    device = torch.device("cuda" if config.device.startswith("cuda") else "cpu")
    if should_compile(config.compile, device):
        check_backend(config.compile_backend)
    return names


def check_out_path(out: str | os.PathLike[str]) -> None:
    """``out`` can name a directory here (CheckpointError otherwise: a name too long, a loop
    of links, no permission to look): ``Path.exists`` raises for those, mid-setup."""
    try:
        os.stat(out)
    except (FileNotFoundError, NotADirectoryError):
        pass  # created later, or refused there in one line
    except OSError as err:
        raise CheckpointError(f"cannot use {safe_text(str(out), 200)} as the run directory: "
                              f"{err.strerror or err}") from None


def check_steps(config: TrainConfig, step: int) -> None:
    """A resumed run (``--override steps``) must not end before the step it resumes at."""
    if config.steps < step:
        raise ConfigError(f"--resume: the run is at step {step}, past steps = {config.steps}")


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``root/.ssmcompile-run.lock``."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise CheckpointError(f"cannot write to {self.path.parent}: "
                                  f"{err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(f"another trainer is running in {self.path.parent} (it holds "
                                  f"{LOCK_FILE}); wait for it to end or use another --out"
                                  ) from None
        except OSError as err:
            os.close(fd)
            raise CheckpointError(f"cannot lock {self.path}: {err.strerror or err}") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


class RunSession:
    """Open with ``RunSession.open``; rank 0 (``main``) locks, checks and writes, other DDP
    ranks only use the directory. ``begin`` decides fresh or resume and returns the run id,
    ``commit`` records the identity once setup has succeeded, ``abandon`` undoes a failed
    setup, ``close`` releases the lock."""

    def __init__(self, root: Path, main: bool) -> None:
        self.root, self.main = root, main
        self.lock = RunLock(root)
        self.made: list[Path] = []  # directories this session created, deepest first
        self.identity: RunIdentity | None = None
        self.fresh = False
        self.changed: list[str] = []
        self.needs_write = False

    @classmethod
    def open(cls, root: str | os.PathLike[str], main: bool, *, resume: bool,
             force: bool) -> RunSession:
        session = cls(Path(root), main)
        path = session.root
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"output path is not a directory: {path}")
        if main:
            # refused before the lock file exists, so a refusal adds nothing to the directory;
            # ``begin`` checks again under the lock
            if resume and not any((path / n).exists() for n in (RUN_FILE, "last.safetensors")):
                raise CheckpointError(f"nothing to resume in {path} (no run there)")
            if not resume and not force:
                session._refuse_occupied(occupants(path))
            session.made = [p for p in (path, *path.parents) if not p.exists()]
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CheckpointError(f"cannot create the run directory {path}: "
                                      f"{err.strerror or err}") from None
            try:
                session.lock.acquire()
            except SSMCompileError:
                session.abandon()
                raise
        return session

    def begin(self, config: TrainConfig, *, resume: bool, force: bool,
              override: Collection[str], builder: str, data: str, new_run_id: str) -> str:
        """Check that this run may start (or continue) here; its run id."""
        identity = read_identity(self.root)
        if resume:
            if identity is None:
                identity, self.needs_write = self._legacy_identity(builder), True
            self.changed = check_resume(identity, config, data, builder, override)
            if self.changed or not identity.data:
                self.needs_write = True
                overrides = identity.overrides
                if self.changed:
                    overrides += ({"step": None, "fields": self.changed},)
                identity = RunIdentity(identity.run_id, builder, config.to_dict(), data,
                                       overrides)
            self.identity = identity
            return identity.run_id
        names = occupants(self.root)
        if not force:
            self._refuse_occupied(names)
        self._remove_run_files(names)
        remove_stale_temps(self.root)
        self.identity = RunIdentity(new_run_id, builder, config.to_dict(), data)
        self.fresh = self.needs_write = True
        return new_run_id

    def _refuse_occupied(self, names: list[str]) -> None:
        if not names:
            return
        shown = ", ".join(safe_text(n, 60) for n in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        what = ("a training run" if any(is_run_file(n) for n in names)
                else f"other files ({shown}{more})")
        raise CheckpointError(f"{self.root} already holds {what}: pass --resume to continue a "
                              "run there, or --force to start a new run in it (--force deletes "
                              "an earlier run's files and keeps all others)")

    def _remove_run_files(self, names: list[str]) -> None:
        for name in (n for n in names if is_run_file(n)):
            path = self.root / name
            if path.is_file() or path.is_symlink():
                try:
                    path.unlink()
                except OSError as err:
                    raise CheckpointError(f"cannot remove {path}: {err.strerror or err}"
                                          ) from None

    def _legacy_identity(self, builder: str) -> RunIdentity:
        """The identity of a run written before ``run.json``: from its newest checkpoint."""
        from ..io import read_checkpoint_meta
        from .checkpoints import RunDirectory
        from .state_io import read_state_id

        run_dir = RunDirectory(self.root, builder=builder)
        try:
            stem = run_dir.resume_stem()
        except CheckpointError:
            raise CheckpointError(f"nothing to resume in {self.root} (no run there)") from None
        meta = read_checkpoint_meta(run_dir.weights(stem))
        _, ident = read_state_id(run_dir.state(stem))
        stored = meta.extra.get("config")
        if stored is None:
            raise CheckpointError(f"{run_dir.weights(stem)} holds no training config: it cannot "
                                  "be resumed")
        config = parse_config_json(stored, run_dir.weights(stem))
        validated_config(config)
        run_id = ident.split(":", 1)[0]
        if not RUN_ID.fullmatch(run_id):
            raise CheckpointError(f"{run_dir.state(stem)}: checkpoint id "
                                  f"{safe_text(repr(ident), 80)} names no run")
        return RunIdentity(run_id, meta.builder, config, "")

    def commit(self, step: int) -> None:
        """Write the identity (a fresh run's, or one a resume changed) now that setup held."""
        if not (self.main and self.needs_write and self.identity is not None):
            return
        if self.changed and self.identity.overrides:
            *before, last = self.identity.overrides
            self.identity = RunIdentity(self.identity.run_id, self.identity.builder,
                                        self.identity.config, self.identity.data,
                                        (*before, {**last, "step": step}))
        write_identity(self.root, self.identity)
        self.needs_write = False

    def abandon(self) -> None:
        """Undo what this session created: the directories it made, with our lock file, when
        nothing else is in them. (A lock file in a directory that was there stays: unlinking a
        lock file another process may be about to lock would let two trainers in.)"""
        self.lock.release()
        if self.made:
            with contextlib.suppress(OSError):
                (self.root / LOCK_FILE).unlink()
            for directory in self.made:
                with contextlib.suppress(OSError):
                    directory.rmdir()

    def close(self) -> None:
        self.lock.release()


__all__ = ["RunSession", "RunLock", "is_run_file", "occupants", "check_start", "check_steps",
           "check_out_path", "LOCK_FILE"]
