"""One data directory, one `milestones dev`: an exclusive ``flock`` on ``<data-dir>/dev.lock``.

The lock file names its holder (pid and start time) for the refusal. ``flock`` belongs to the
open file, not to the path: it is released when the last descriptor of it closes, so a dev
killed by any means leaves no stale lock. The reaper (``services.app.reaper``) inherits the
descriptor, so the lock is held until the servers of a dev that died are stopped too, and a new
dev cannot start on a store the old servers still write.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from events.errors import StartupError

LOCK_FILE = "dev.lock"
CLEANUP_WAIT = 6.0  # seconds a new dev waits for the reaper of a dev that died (it needs < 5)
NAMING_WAIT = 1.0  # seconds a holder has to write its name after taking the lock


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    started_at: str  # RFC 3339, UTC


class DevLock:
    """Held by this process (and the reaper it starts) while `milestones dev` runs."""

    def __init__(self, path: Path, fd: int, started_at: str) -> None:
        self.path = path
        self.fd = fd
        self.started_at = started_at

    @classmethod
    async def acquire(cls, data_dir: Path, wait: float = CLEANUP_WAIT) -> DevLock:
        """The lock, or a ``StartupError`` of one line naming the process that holds it. A lock
        whose holder is dead belongs to its reaper, stopping that dev's servers: waited for up to
        ``wait`` seconds."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        start = time.monotonic()
        while not _try_lock(fd):
            holder = read_holder(path)
            waited = time.monotonic() - start
            # a holder that is alive is refused at once; one that has not written its name yet
            # gets a moment; one that died leaves the lock to its reaper, about to release it
            if (holder is not None and _alive(holder.pid)) or waited > (
                wait if holder is not None else NAMING_WAIT
            ):
                os.close(fd)
                raise StartupError(refusal(data_dir, holder))
            await asyncio.sleep(0.05)  # polling for the lock's release, with a deadline
        started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, msgspec.json.encode(Holder(pid=os.getpid(), started_at=started)), 0)
        return cls(path, fd, started)

    def release(self) -> None:
        """Closes this process's descriptor (the reaper's closes when it ends)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def refusal(data_dir: Path, holder: Holder | None) -> str:
    if holder is None:
        who = "another process"
    elif _alive(holder.pid):
        who = f"milestones dev (pid {holder.pid}, started {holder.started_at})"
    else:
        who = f"the cleanup after milestones dev (pid {holder.pid}, ended)"
    return f"{data_dir} is in use by {who}: stop it first, or use another --data-dir"


def read_holder(path: Path) -> Holder | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Holder)
    except (OSError, msgspec.DecodeError):
        return None


def holder(data_dir: Path) -> Holder | None:
    """Who runs `milestones dev` on ``data_dir`` now, or None (for the CLI: is dev running?)."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
