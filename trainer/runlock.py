"""One trainer per run folder: an exclusive lock that the trainer holds for its whole life.

`fcntl.flock` on `run.lock` in the run folder: the OS releases it when the process dies, kill -9 included,
so a free lock means no live trainer. It works across hosts on NFS (mounted with the default
`local_lock=none`) and Lustre (mounted with `-o flock`); see docs/launcher.md. Where flock is unavailable
(ENOLCK/EOPNOTSUPP/ENOSYS) the fallback is a lease: `run.lease` created with O_EXCL, refreshed with the
status heartbeat, and stale when older than STALE_AFTER_S or when its pid on this host is gone.

Import-light (no torch): the launcher probes locks of whole grids with `is_held`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from trainer import runfiles

STALE_AFTER_S = 600.0  # a live trainer refreshes its heartbeat (and lease) far more often than every 10 minutes
ACQUIRE_WAIT_S = 2.0   # is_held holds the lock for microseconds; a trainer retries past such a probe
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class RunLocked(RuntimeError):
    """Another live trainer holds the run folder."""


def pid_gone(host: Any, pid: Any) -> bool:
    """True only when (host, pid) names a process of this host that no longer exists."""
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def _owner_bytes() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()


def _read_owner(path: Path) -> dict[str, Any]:
    return runfiles.read_json(path) or {}


def lease_name(name: str) -> str:
    """The lease file that stands in for lock file `name` where flock is unavailable: run.lock -> run.lease."""
    return name.rsplit(".", 1)[0] + ".lease"


def describe_owner(run_dir: str | os.PathLike, name: str = runfiles.LOCK) -> str:
    """'pid P on host H' of the lock's (or lease's) holder, as far as its file tells."""
    for file in (name, lease_name(name)):
        owner = _read_owner(Path(run_dir) / file)
        if owner.get("pid"):
            return f"pid {owner['pid']} on host {owner.get('host')}"
    return "an unknown process"


def lease_stale(path: Path, now: float | None = None) -> bool:
    """A lease nobody refreshes: older than STALE_AFTER_S, or held by a dead pid of this host."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return True
    owner = _read_owner(path)
    return age > STALE_AFTER_S or pid_gone(owner.get("host"), owner.get("pid"))


def _flock_state(path: Path, operation: int) -> bool | None:
    """Try flock(operation | LOCK_NB) on a fresh descriptor: True got it (released again), False held
    elsewhere, None flock unavailable on this file system."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in _NO_FLOCK:
            return None
        raise
    finally:
        os.close(fd)
    return True


def is_held(run_dir: str | os.PathLike, name: str = runfiles.LOCK) -> bool:
    """True while a live trainer holds the run folder (its flock, or a fresh lease where flock is unavailable)."""
    run_dir = Path(run_dir)
    lock = run_dir / name
    try:
        got = _flock_state(lock, fcntl.LOCK_SH)
    except FileNotFoundError:
        got = True
    if got is False:
        return True
    lease = run_dir / lease_name(name)
    return lease.exists() and not lease_stale(lease)


def has_lock_file(run_dir: str | os.PathLike) -> bool:
    """Whether a trainer that locks its folder ever ran here (folders of older versions have none)."""
    return (Path(run_dir) / runfiles.LOCK).exists()


class RunLock:
    """The run folder's lock: `acquire()` or raise RunLocked; `refresh()` with each heartbeat; `release()`.

    `name` picks another lock file of the folder (the launcher's short-lived SUBMIT_LOCK)."""

    def __init__(self, run_dir: str | os.PathLike, name: str = runfiles.LOCK) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self._fd: int | None = None
        self._lease: Path | None = None

    def acquire(self, wait_s: float = ACQUIRE_WAIT_S) -> "RunLock":
        deadline = time.monotonic() + wait_s
        while not self._try():
            if time.monotonic() >= deadline:
                raise RunLocked(f"run folder {self.run_dir} is in use by another trainer "
                                f"({describe_owner(self.run_dir, self.name)}); not starting a second one")
            time.sleep(0.05)
        return self

    def _try(self) -> bool:
        fd = os.open(self.run_dir / self.name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            os.close(fd)
            if err.errno in _NO_FLOCK:
                return self._try_lease()
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_bytes(), 0)
        self._fd = fd
        return True

    def _try_lease(self) -> bool:
        path = self.run_dir / lease_name(self.name)
        if path.exists() and lease_stale(path):
            aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
            try:  # of several takers only one rename of the stale lease succeeds
                os.replace(path, aside)
                os.unlink(aside)
            except FileNotFoundError:
                pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(_owner_bytes())
        self._lease = path
        return True

    def refresh(self) -> None:
        """Keep a lease fresh (called with every status heartbeat); nothing to do for a flock."""
        if self._lease is not None:
            try:
                os.utime(self._lease)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lease is not None:
            if _read_owner(self._lease).get("pid") == os.getpid():
                try:
                    os.unlink(self._lease)
                except FileNotFoundError:
                    pass
            self._lease = None

    def __enter__(self) -> "RunLock":
        return self if self._fd is not None or self._lease is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
