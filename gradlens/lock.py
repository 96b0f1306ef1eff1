"""One writer per run file: a lock file beside the run, held for the writer's whole life.

``RunLock(path)`` creates ``<path>.lock`` (e.g. ``run.h5.lock``) holding JSON ``{"pid", "host", "time",
"process_start"}`` and takes an exclusive ``flock`` on it. The operating system drops a ``flock`` when its
holder dies, however it dies (SIGKILL, out of memory), so a lock file left by a killed process never blocks a
later run: the next writer finds the file unlocked and takes it over. A second writer, in another process or
in the same one, is refused at once with an error naming the path and the holder (pid, host).

Release removes the lock file while still holding the lock; an acquirer checks after locking that the file it
locked is still the one at the path (else it retries), so a release racing an acquire never lets two writers
in.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path

_HELD: dict[str, weakref.ref] = {}  # lock file -> RunLock of this process
_HELD_GUARD = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the run file ``path``: ``<real path>.lock`` (symlinks resolved)."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".lock")


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, process_start: str | None = None) -> bool:
    """Whether process ``pid`` of this host exists (and, when known, is the one that started then)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return process_start is None or _process_start(pid) in (None, process_start)


def read_holder(path: str | os.PathLike) -> dict | None:
    """The JSON in the lock file of run ``path`` (``pid``, ``host``, ``time``, ...), or None if absent/unreadable."""
    try:
        text = lock_path(path).read_text()
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another writer (no details written yet)"
    since = datetime.fromtimestamp(float(holder.get("time", 0)), UTC).isoformat(timespec="seconds")
    return f"process {holder.get('pid')} on host {holder.get('host')!r} (since {since})"


def writer(path: str | os.PathLike) -> dict | None:
    """The live writer of run ``path`` as the lock file describes it, or None when no process holds the lock.

    A lock file whose ``flock`` nobody holds belongs to a writer that ended without releasing it (killed).
    """
    file = lock_path(path)
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path) or {}
        except OSError:  # no flock on this file system: judge by the pid
            holder = read_holder(path)
            alive = (
                holder is not None
                and holder.get("host") == socket.gethostname()
                and pid_alive(int(holder.get("pid", -1)), holder.get("process_start"))
            )
            return holder if alive else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _identity(status: os.stat_result) -> tuple[int, int]:
    """What tells one file from another: its device and inode."""
    return status.st_dev, status.st_ino


class LockedError(OSError):
    """Another writer holds the run file (one line naming the path and the holder)."""


class RunLock:
    """The writer's lock on one run file; :meth:`release` (or process exit) frees it.

    The lock owns one file descriptor, and only the object that took the lock closes it. A copy (``copy``,
    ``deepcopy``, pickle: e.g. ``copy.deepcopy(model)`` while a session's hooks are on the model) holds
    nothing, so that releasing or collecting it never closes a descriptor that is the original's, or that the
    original has closed and the process has since reused for another file.

    Raises:
        LockedError: another process, or another recorder in this process, writes ``path``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.file = lock_path(path)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the locked file
        key = str(self.file)
        with _HELD_GUARD:
            other = _HELD.get(key)
            if other is not None and other() is not None and other()._fd is not None:
                raise LockedError(
                    f"{self.path} is already being written by this process (pid {os.getpid()} on host "
                    f"{socket.gethostname()!r}); close the other session on it first or choose another path"
                )
            self._acquire()
            _HELD[key] = weakref.ref(self)

    def _acquire(self) -> None:
        deadline = time.monotonic() + 0.25
        for _ in range(1000):
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if self._held_by_another(deadline):
                    raise LockedError(
                        f"{self.path} is already being written by {_describe(read_holder(self.path))}; "
                        f"wait for that run to end or choose another path (lock file {self.file})"
                    ) from None
                continue
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                self._without_flock(fd)
                return
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: lock the new one
                os.close(fd)
                continue
            self._write(fd)
            return
        raise LockedError(f"could not lock {self.file}: it keeps being replaced; is another writer looping?")

    def _held_by_another(self, deadline: float) -> bool:
        """Whether a writer holds the lock (refuse), or it may be a reader's brief probe (retry a moment).

        :func:`writer` holds the lock shared for microseconds; the details in the file tell a live writer
        (refuse at once) from details left by a dead one (a reader is probing: try again until ``deadline``).
        """
        holder = read_holder(self.path)
        live = holder is not None and (
            holder.get("host") != socket.gethostname()
            or pid_alive(int(holder.get("pid", -1)), holder.get("process_start"))
        )
        if live or time.monotonic() > deadline:
            return True
        time.sleep(0.005)
        return False

    def _without_flock(self, fd: int) -> None:
        """File systems without ``flock``: a live holder on this host (by pid) or another host refuses us."""
        holder = read_holder(self.path)
        host = socket.gethostname()
        mine = holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == host
        stale = holder is None or (
            holder.get("host") == socket.gethostname()
            and not pid_alive(int(holder.get("pid", -1)), holder.get("process_start"))
        )
        if holder is not None and not stale and not mine:
            os.close(fd)
            raise LockedError(
                f"{self.path} is already being written by {_describe(holder)}; if that process is gone, "
                f"delete {self.file}"
            )
        self._write(fd)

    def _write(self, fd: int) -> None:
        details = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
            "process_start": _process_start(os.getpid()),
            "run": str(self.path),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(details).encode(), 0)
        self._fd = fd
        self._identity = _identity(os.fstat(fd))
        self._pid = os.getpid()

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and free the lock. Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if getattr(self, "_pid", os.getpid()) != os.getpid():
            return  # a forked child's copy: the lock and its file belong to the parent
        if self._owns(fd):
            try:
                if _identity(os.stat(self.file)) == self._identity:
                    self.file.unlink()
            except OSError:
                pass
            os.close(fd)  # closing drops the flock
        with _HELD_GUARD:
            if _HELD.get(str(self.file)) is not None and _HELD[str(self.file)]() in (self, None):
                del _HELD[str(self.file)]

    def _owns(self, fd: int) -> bool:
        """Whether ``fd`` is still open on the file this lock locked.

        False when something else closed it (interpreter shutdown) and, worse, when the process has since
        reused the number for another file: closing it then would close someone else's descriptor.
        """
        try:
            return _identity(os.fstat(fd)) == self._identity
        except OSError:
            return False

    def __getstate__(self) -> dict:
        """A copy holds no lock: it must never close or unlink what the original holds."""
        return {**self.__dict__, "_fd": None, "_identity": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, {'held' if self.held else 'released'})"
