"""The one owner of run directories: ``$DLSETUP_STATE_DIR/runs/<time>-<kind>-<random>/``.

Each run directory is private (0700) and locked (``fcntl.flock`` on its ``.lock``) by the process that made it,
for that process's life (or until :func:`release_run_dir`): a run's log, events and verify files are read and
written after its playbook ended. Rotation keeps the newest :data:`KEEP_RUNS` and never removes a locked (live)
one, so a run that another dlsetup is still writing survives however many runs start meanwhile. Making a run
directory and rotating happen under ``runs/.lock``, so no run is seen between its creation and its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

KEEP_RUNS = 30
LOCK_NAME = ".lock"
SCRATCH_NAME = "tmp"
# the lock fd of each run directory this process made, held until it exits
_HELD: dict[Path, int] = {}


def state_dir() -> Path:
    """``$DLSETUP_STATE_DIR``, else ``$XDG_STATE_HOME/dlsetup`` (``~/.local/state/dlsetup``)."""
    base = os.environ.get("DLSETUP_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "dlsetup"


def runs_dir() -> Path:
    runs = state_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(runs, 0o700)  # one made by an older dlsetup was 0755
    return runs


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_run_dir(kind: str) -> Path:
    """A new private run directory, locked by this process; older runs beyond :data:`KEEP_RUNS` that no process
    holds are removed first."""
    runs = runs_dir()
    with _locked(runs / LOCK_NAME):
        sequence = _next_sequence(runs)
        _rotate(runs, keep=KEEP_RUNS - 1)
        # unique even for two runs of one kind within a second; mkdtemp makes it 0700
        path = Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-", dir=runs))
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{sequence} {os.getpid()}\n".encode())
        _HELD[path] = fd
    return path


def release_run_dir(path: Path) -> None:
    """Let go of a run directory this process holds: rotation may remove it from now on."""
    fd = _HELD.pop(path, None)
    if fd is not None:
        os.close(fd)


def is_live(path: Path) -> bool:
    """Whether a process (this one included) holds ``path``'s lock."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _next_sequence(runs: Path) -> int:
    """A counter of run directories (creation order: names and mtimes tie within a second or a clock tick)."""
    counter = runs / ".sequence"
    try:
        last = int(counter.read_text().strip() or 0)
    except (OSError, ValueError):
        last = 0
    fd = os.open(counter, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{last + 1}\n")
    return last + 1


def _order(path: Path) -> tuple[int, int]:
    try:
        sequence = int((path / LOCK_NAME).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        sequence = -1  # an older dlsetup's: before every numbered one
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return sequence, mtime


def _rotate(runs: Path, *, keep: int) -> None:
    """Remove the oldest run directories until ``keep`` are left, skipping every live one."""
    found = sorted((p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()), key=_order)
    excess = len(found) - max(keep, 0)
    for old in found:
        if excess <= 0:
            return
        fd = _try_lock(old)
        if fd is None:  # live: another run's (or ours)
            continue
        try:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)
        excess -= 1


def _try_lock(path: Path) -> int | None:
    """The run's lock taken (fd), or ``None`` when a process holds it; a run without a lock file (an older
    dlsetup's) is taken with a lock on nothing."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def scratch(run_dir: Path) -> Iterator[Path]:
    """``run_dir/tmp``, private, for the temp files of the processes a run starts (``TMPDIR``, Ansible's local
    temp): removed when the block ends, however it ends."""
    path = run_dir / SCRATCH_NAME
    path.mkdir(mode=0o700, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def scratch_env(path: Path) -> dict[str, str]:
    """The environment that puts a child's temp files (and Ansible's on the controller) under ``path``."""
    return {"TMPDIR": str(path), "ANSIBLE_LOCAL_TEMP": str(path / "ansible")}
