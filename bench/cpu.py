"""CPU time per message of every process a scenario runs on, from each process's own accounting.

Each process's user + system time is read from ``/proc/<pid>/stat`` (``bench.stack.cpu_seconds``)
just before and just after the scenario: the service processes, nats-server (when started here),
the benchmark's own process (the load) and, while a scenario runs, PostgreSQL's backends.

PostgreSQL: the backends serving the benchmark's database, found among the postmaster's children
by their process title (``postgres: <user> <database> <host>(<port>) <state>``), since the server
may be shared (``--database-url``) and other databases' work is not ours. Backends come and go
(a rebuild's connection ends with it), so they are polled every ``interval`` and a backend that
ended meanwhile counts up to its last sample; one that started meanwhile counts from zero. The
server's own background processes (WAL writer, checkpointer, autovacuum) are not counted. When
the server's processes cannot be seen (another host or container) there is no PostgreSQL figure.

``/proc`` counts in clock ticks (10 ms on Linux): a figure needs a scenario long enough for
its processes to use many of them (a default run's do; a tiny test run's may read 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.stack import cpu_seconds

LOAD = "load (bench)"
POSTGRES = "postgres"


def _cpu(pid: int) -> float | None:
    """CPU seconds of ``pid``, or None when it is gone (or not ours to see)."""
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class PostgresBackends:
    """The backends of one database, as children of one postmaster."""

    postmaster: int
    database: str

    @classmethod
    async def find(cls, dsn: str) -> PostgresBackends | None:
        """From a connection of its own: its backend's parent is the postmaster."""
        conn = await asyncpg.connect(dsn)
        try:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            database = await conn.fetchval("SELECT current_database()")
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None  # the server runs where its processes cannot be seen
            postmaster = int(stat.rpartition(")")[2].split()[1])  # field 4, the parent
            return cls(postmaster, str(database))
        finally:
            await conn.close()

    def _children(self) -> list[int]:
        path = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
        with contextlib.suppress(OSError):
            return [int(p) for p in path.read_text().split()]
        pids = []  # no CONFIG_PROC_CHILDREN: every process's parent
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rpartition(")")[2].split()[1]) == self.postmaster:
                        pids.append(int(entry.name))
        return pids

    def sample(self) -> dict[int, float]:
        """CPU seconds of each backend of the database now."""
        out: dict[int, float] = {}
        needle = f" {self.database} "
        for pid in self._children():
            with contextlib.suppress(OSError):
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if needle in f"{title} ":
                    seconds = _cpu(pid)
                    if seconds is not None:
                        out[pid] = seconds
        return out


@dataclass
class Window:
    """CPU seconds per process over one scenario (``seconds`` is filled when it ends)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        """A process that reports its own CPU (a rebuild's, from ``getrusage``)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def per_message(self, messages: int) -> dict[str, float]:
        """Milliseconds of CPU per message, per process."""
        if messages <= 0:
            return {}
        return {name: round(s * 1000 / messages, 4) for name, s in self.seconds.items()}


@dataclass
class CpuMeter:
    """``processes`` names the processes to read (called at each window's start: the services
    alive then); ``postgres`` the database's backends, or None."""

    processes: Callable[[], dict[str, int]]
    postgres: PostgresBackends | None = None
    interval: float = 0.2

    @contextlib.asynccontextmanager
    async def window(self) -> AsyncIterator[Window]:
        pids = {**self.processes(), LOAD: os.getpid()}
        before = {name: _cpu(pid) for name, pid in pids.items()}
        first: dict[int, float] = self.postgres.sample() if self.postgres else {}
        last = dict(first)
        stop = asyncio.Event()

        async def poll() -> None:
            assert self.postgres is not None
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
                last.update(self.postgres.sample())

        poller = asyncio.create_task(poll()) if self.postgres else None
        window = Window()
        try:
            yield window
        finally:
            stop.set()
            if poller is not None:
                await poller
        for name, pid in pids.items():
            start, end = before[name], _cpu(pid)
            if start is not None and end is not None:
                window.seconds[name] = end - start
        if self.postgres is not None:
            window.seconds[POSTGRES] = sum(s - first.get(pid, 0.0) for pid, s in last.items())


def row(label: str, figures: dict[str, float]) -> tuple[str, str, str, str]:
    """One line of the results table: ms of CPU per message by process, the idle ones left out
    (the JSON has them all)."""
    busy = {k: v for k, v in figures.items() if k != "messages" and v >= 0.0005}
    text = " · ".join(f"{k} {v:.3f}" for k, v in busy.items())
    total = sum(v for k, v in figures.items() if k != "messages")
    return (
        f"CPU ms/msg, {label}",
        text or "idle",
        f"{figures.get('messages', 0):,} msgs",
        f"Σ {total:.3f} ms",
    )
