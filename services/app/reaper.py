"""The servers `milestones dev` starts die with it, however it dies.

nats-server runs in a session of its own and the postmaster daemonises (``pg_ctl``): neither a
process group nor a parent-death signal reaches them. So dev starts this small process, in a
session of its own too (Ctrl-C on the terminal reaches dev, which stops the servers in order,
not the reaper). It holds the read end of a pipe whose write end only dev holds, and dev tells
it each server as it starts one. EOF on the pipe means dev is gone, by any means (a SIGKILL, a
closed terminal, a crash): the reaper stops what dev did not (nats-server: SIGTERM; the
postmaster: SIGQUIT, PostgreSQL's immediate shutdown, recovered from the WAL on the next start;
then SIGKILL for what is still alive after ``GRACE`` seconds) and exits. After a clean stop dev
has said ``forget`` for each server, and the reaper finds nothing to do.

It inherits dev's lock on the data directory (``services.app.devlock``), so the next dev starts
only once these servers are gone.

Protocol (lines on the pipe): ``watch <name> <pid>``, ``pgdata <since> <path>`` (the postmaster
named by ``<path>/postmaster.pid`` if it started after ``<since>``, epoch seconds: covers a dev
killed in the middle of starting PostgreSQL), ``forget <name>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

log = structlog.get_logger("milestones.reaper")

GRACE = 2.0  # seconds between the polite signal and SIGKILL
POLITE = {"nats": signal.SIGTERM, "postgres": signal.SIGQUIT}


# -- dev's side -----------------------------------------------------------------------------------
class Reaper:
    """The write end of the pipe; closing it (or dying) tells the reaper to act."""

    def __init__(self, proc: subprocess.Popen, fd: int) -> None:
        self.proc = proc
        self._fd = fd
        self._broken = False
        self.watched: dict[str, int] = {}
        self._pgdata: tuple[float, Path] | None = None

    @classmethod
    def start(cls, lock_fd: int, log_format: str = "json", log_level: str = "info") -> Reaper:
        read, write = os.pipe()  # both close-on-exec: no server dev starts inherits them
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.app.reaper"]
                + [str(read), str(lock_fd), log_format, log_level],
                pass_fds=(read, lock_fd),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            os.close(read)
        return cls(proc, write)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def watch(self, name: str, pid: int) -> None:
        self.watched[name] = pid
        self._send(f"watch {name} {pid}")

    def watch_pgdata(self, pgdata: Path) -> None:
        since = int(time.time())
        self._pgdata = (since, Path(pgdata).resolve())
        self._send(f"pgdata {since} {self._pgdata[1]}")

    def forget(self, name: str) -> None:
        self.watched.pop(name, None)
        self._send(f"forget {name}")

    def forget_stopped(self) -> None:
        """After dev stopped its servers: those gone are forgotten (their pids may be reused);
        any still running is left to the reaper."""
        if self._pgdata is not None:
            # the postmaster removes postmaster.pid as it exits: gone, or as good as
            postmaster = postmaster_pid(self._pgdata[1], self._pgdata[0])
            if postmaster is None or not alive(postmaster):
                self.forget("postgres")
        for name, pid in list(self.watched.items()):
            if not alive(pid):
                self.forget(name)

    def close(self, wait: float = 0.5) -> None:
        """Done: the reaper stops what it was not told to forget, then exits."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait)

    def _send(self, line: str) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, (line + "\n").encode())  # short lines: atomic on a pipe
        except OSError as exc:
            if not self._broken:
                self._broken = True
                log.warning("reaper gone: servers may outlive a hard kill", error=str(exc))


# -- the reaper process ---------------------------------------------------------------------------
class Watched:
    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.pgdata: tuple[float, Path] | None = None

    def apply(self, line: str) -> None:
        match line.split(" ", 2):
            case ["watch", name, pid] if pid.isdigit():
                self.pids[name] = int(pid)
            case ["pgdata", since, path] if since.isdigit():
                self.pgdata = (float(since), Path(path))
            case ["forget", name]:
                self.pids.pop(name, None)
                if name == "postgres":
                    self.pgdata = None

    def targets(self) -> dict[str, int]:
        found = dict(self.pids)
        if self.pgdata is not None and "postgres" not in found:
            since, pgdata = self.pgdata
            pid = postmaster_pid(pgdata, since)
            if pid is not None:
                found["postgres"] = pid
        return {name: pid for name, pid in found.items() if alive(pid)}


def postmaster_pid(pgdata: Path, since: float = 0.0) -> int | None:
    """The pid in ``postmaster.pid`` if that postmaster started after ``since`` (so a stale
    file whose pid now belongs to another process is left alone)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, started = int(lines[0]), int(lines[2])
    except (OSError, ValueError, IndexError):
        return None
    return pid if started >= since - 1 else None


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def stop(targets: dict[str, int], grace: float = GRACE) -> dict[str, int]:
    """The polite signal to each, SIGKILL to what is left after ``grace`` s; returns what
    is still alive after another ``grace`` s (nothing, normally)."""
    for name, pid in targets.items():
        _signal(pid, POLITE.get(name, signal.SIGTERM))
    left = _wait_gone(targets, grace)
    for pid in left.values():
        _signal(pid, signal.SIGKILL)
    return _wait_gone(left, grace)


def _wait_gone(targets: dict[str, int], seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    left = {n: p for n, p in targets.items() if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.02)  # polling other processes' exits, with a deadline
        left = {n: p for n, p in left.items() if alive(p)}
    return left


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def _say(level: str, event: str, **fields: object) -> None:
    with contextlib.suppress(OSError, ValueError):  # dev's terminal may be gone with it
        getattr(log, level)(event, **fields)


def main(argv: list[str]) -> int:
    read_fd, _lock_fd, log_format, log_level = int(argv[0]), int(argv[1]), argv[2], argv[3]
    for sig in (signal.SIGINT, signal.SIGHUP):  # the terminal's, should one still reach us
        signal.signal(sig, signal.SIG_IGN)
    from services.app.logs import configure

    configure(log_format, log_level)
    dev_pid = os.getppid()
    watched = Watched()
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:  # until EOF: dev has gone, however
            watched.apply(raw.decode(errors="replace").strip())
    targets = watched.targets()
    if not targets:
        return 0
    _say(
        "warning",
        "milestones dev ended without stopping its servers: stopping them",
        dev=dev_pid,
        servers=targets,
    )
    left = stop(targets)
    if left:
        _say("error", "servers still running after SIGKILL", servers=left)
        return 1
    _say("info", "servers of the ended milestones dev stopped", servers=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
