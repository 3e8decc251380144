"""One writer per run directory: an exclusive ``flock`` on ``<dir>/.lock``, which names its owner.

Why ``flock`` rather than creating the file with ``O_EXCL``: the kernel drops the lock when its
holder dies however it dies (SIGKILL, OOM, a crashed node's NFS lease), so a stale lock needs no
guesswork. An ``O_EXCL`` file outlives its process; telling it stale by ``kill(pid, 0)`` works on
the same host only, misreads a recycled pid, and two processes taking over the same stale file
race. The file still holds JSON ``{pid, host, started}`` so the refusal can say who holds it; a
file left by a dead owner is simply locked again, with a warning naming that owner.

Where a filesystem cannot ``flock`` (some FUSE mounts), the lock falls back to that recorded
owner: refused while it names a live process on this host or any process on another host.

Example::

    with RunLock(run_dir):
        ...  # the only process writing under run_dir
"""

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""

    def __init__(self, path: Path, owner: dict) -> None:
        self.path, self.owner = path, owner
        who = (
            f"pid {owner.get('pid')} on host {owner.get('host')} (started {owner.get('started')})"
            if owner
            else "a process that has not yet written its pid"
        )
        super().__init__(
            f"{path.parent}: in use by {who}; one process writes a run directory at a time "
            f"(wait for it or stop it; its lock is {path})"
        )


class RunLock:
    """Holds ``<directory>/.lock`` from :meth:`acquire` (or ``with``) until :meth:`release`."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        """Take the lock, or raise :class:`RunLockedError` naming its holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this RunLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunLockedError(self.path, owner) from None
            except OSError as err:
                if err.errno not in _NO_FLOCK:
                    os.close(fd)
                    raise
                self._without_flock(fd, err)
                return self
            # A holder releasing right now unlinks the file we opened: lock the new one instead.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read_owner(fd)
        if previous:
            log.warning(
                "%s: taking over the lock of pid %s on host %s (started %s), no longer running",
                self.path, previous.get("pid"), previous.get("host"), previous.get("started"),
            )  # fmt: skip
        self._own(fd)
        return self

    def _without_flock(self, fd: int, err: OSError) -> None:
        owner = _read_owner(fd)
        if owner and owner.get("pid") != os.getpid() and not _dead(owner):
            os.close(fd)
            raise RunLockedError(self.path, owner)
        log.warning(
            "%s: no flock on this filesystem (%s); relying on the owner it names", self.path, err
        )
        self._own(fd)

    def _own(self, fd: int) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)


def _read_owner(fd: int) -> dict:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _dead(owner: dict) -> bool:
    """Whether the recorded owner is known to be gone (only decidable on its own host)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
