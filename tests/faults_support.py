"""Machinery of the fault tests (tests/test_faults.py): a steady load through the intake, a TCP
proxy that makes PostgreSQL refuse connections, the projections as a process, and the checks
that follow every fault (each acknowledged event in the stream exactly once, every read model
equal to a rebuild). Figures go to ``$MILESTONES_FAULTS_REPORT`` (JSON lines) when it is set."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgspec

from projections import PROJECTIONS
from projections.db import connect
from projections.rebuild import rebuild
from services.eventlog.log import EventLog
from tests.conftest import cli_env, cloudevent, request

EVENT_MODELS = ("status", "history", "audit")
BASE = dt.date(2027, 1, 4)


def record(fault: str, **figures: object) -> None:
    """Keep a run's figures for the README's Reliability table."""
    path = os.environ.get("MILESTONES_FAULTS_REPORT")
    line = json.dumps({"fault": fault, **figures})
    sys.stderr.write(line + "\n")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


# -- a steady load through the intake ------------------------------------------------------------
class SteadyLoad:
    """``senders`` tasks, each sending a batch (a task added and completed, a reschedule, a
    status report) for one of its projects every ``every`` seconds; every acknowledged event is
    kept (id -> position)."""

    def __init__(self, nc, projects: int = 6, senders: int = 2, every: float = 0.02) -> None:
        self.nc, self.projects, self.senders, self.every = nc, projects, senders, every
        self.acked: dict[str, int] = {}
        self.unanswered = 0
        self.refused: list[str] = []
        self._stop = asyncio.Event()
        self._going = asyncio.Event()
        self._going.set()
        self._inflight = 0
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> SteadyLoad:
        for n in range(self.projects):
            p = f"load{n}"
            batch = [cloudevent("ProjectCreated", {"project_id": p, "name": p})]
            batch += [
                cloudevent(
                    "MilestonePlanned",
                    {
                        "project_id": p,
                        "milestone_id": f"m{m}",
                        "name": f"m{m}",
                        "kind": "time",
                        "due": BASE.isoformat(),
                    },
                )
                for m in range(2)
            ]
            reply = await request(self.nc, batch)
            assert reply.accepted, reply
            self._took(reply)
        self._tasks = [asyncio.create_task(self._send(s)) for s in range(self.senders)]
        return self

    @property
    def last(self) -> int:
        return max(self.acked.values(), default=0)

    def _took(self, reply) -> None:
        if reply.accepted:
            self.acked.update({e.id: e.position for e in reply.events or []})
        else:
            self.refused.append(reply.error.message)

    async def _send(self, sender: int) -> None:
        n = 0
        while not self._stop.is_set():
            p = f"load{(sender + n * self.senders) % self.projects}"
            m, t = f"m{n % 2}", f"s{sender}n{n}"
            due = (BASE + dt.timedelta(days=n % 300 + 1)).isoformat()
            batch = [
                cloudevent(
                    "TaskAdded", {"project_id": p, "milestone_id": m, "task_id": t, "title": t}
                ),
                cloudevent("TaskCompleted", {"project_id": p, "milestone_id": m, "task_id": t}),
                cloudevent(
                    "MilestoneRescheduled",
                    {"project_id": p, "milestone_id": m, "new_due": due, "reason": "load"},
                ),
                cloudevent("StatusReported", {"project_id": p, "health": "on_track", "note": t}),
            ]
            self._inflight += 1
            try:
                self._took(await request(self.nc, batch))
            except Exception:  # no answer (timeout): not acknowledged, may or may not be in
                self.unanswered += 1
            finally:
                self._inflight -= 1
            n += 1
            await asyncio.sleep(self.every)
            await self._going.wait()

    async def pause(self) -> None:
        """No new batch until ``resume``; returns once the batches in flight are answered."""
        self._going.clear()
        while self._inflight:
            await asyncio.sleep(0.01)

    def resume(self) -> None:
        self._going.set()

    async def stop(self) -> None:
        self._stop.set()
        self._going.set()
        await asyncio.gather(*self._tasks)


# -- PostgreSQL behind a proxy that can refuse ---------------------------------------------------
class PgProxy:
    """127.0.0.1:<port> -> PostgreSQL. ``refuse()`` closes the listener and drops every live
    connection (clients get ECONNREFUSED, as from a database that is down); ``reopen()`` listens
    on the same port again."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        parts = urlsplit(dsn)
        host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
        if host.startswith("/"):
            self._target: tuple[str, int | None] = (
                str(next(Path(host).glob(".s.PGSQL.*"))),
                None,
            )
        else:
            self._target = (host, parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        parts = urlsplit(self.dsn)
        return urlunsplit(
            parts._replace(
                netloc=f"{parts.username or 'postgres'}:@127.0.0.1:{self.port}", query=""
            )
        )

    async def start(self) -> PgProxy:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path, port = self._target
        try:
            if port is None:
                up_reader, up_writer = await asyncio.open_unix_connection(path)
            else:
                up_reader, up_writer = await asyncio.open_connection(path, port)
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links -= {writer, up_writer}

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._links):
            w.transport.abort()  # a reset, not a goodbye: the clients learn it mid-query
        self._links.clear()

    async def reopen(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.refuse()


# -- the projections as a process ----------------------------------------------------------------
async def projections_process(settings, db_url: str, log_path: Path, ops_port: int = 0):
    """``milestones serve projections`` (JSON logs appended to ``log_path``; ``/ready`` on
    ``ops_port``, none when 0)."""
    env = {
        **os.environ,
        **cli_env(settings),
        "MILESTONES_DATABASE_URL": db_url,
        "MILESTONES_LOG_FORMAT": "json",
    }
    with open(log_path, "ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "projections",
            "--no-http",
            "--ops-port",
            str(ops_port),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )


def log_lines(log_path: Path) -> list[dict]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


async def positions(db_url: str, names=EVENT_MODELS) -> dict[str, int]:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT projection, position FROM checkpoints WHERE projection = ANY($1::text[])",
            list(names),
        )
        return {r["projection"]: r["position"] for r in rows}
    finally:
        await conn.close()


async def time_to_reach(db_url: str, position: int, timeout: float, names=EVENT_MODELS) -> float:
    """Seconds until every named projection's checkpoint reaches ``position`` (polled)."""
    started = time.monotonic()
    while True:
        reached = await positions(db_url, names)
        if len(reached) == len(names) and min(reached.values()) >= position:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"projections at {reached}, not {position}, after {timeout} s")
        await asyncio.sleep(0.05)


# -- after every fault ---------------------------------------------------------------------------
_LOOSE = msgspec.json.Decoder()


async def lost_and_duplicated(nc, acked: dict[str, int]) -> tuple[int, int]:
    """Of the acknowledged events: how many are not in the stream at their position, and how
    many are there more than once."""
    seen: collections.Counter[str] = collections.Counter()
    at: dict[str, int] = {}
    for m in await EventLog(nc).read_subject("milestones.events.>"):
        try:
            body = _LOOSE.decode(m.data)
        except msgspec.DecodeError:
            continue  # a poison message: not one of ours
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            seen[body["id"]] += 1
            at[body["id"]] = m.seq
    lost = sum(1 for i, pos in acked.items() if seen[i] == 0 or at[i] != pos)
    duplicated = sum(1 for i in acked if seen[i] > 1)
    return lost, duplicated


async def read_models(db_url: str) -> dict[str, list]:
    """Every row of the event read models and of the parked table, in a stable order."""
    conn = await connect(db_url)
    try:
        out: dict[str, list] = {}
        for name in EVENT_MODELS:
            for table in PROJECTIONS[name].tables:
                rows = [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table}")]
                out[table] = sorted(rows, key=repr)
        out["parked_events"] = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT projection, position, behind, payload FROM parked_events "
                "WHERE projection = ANY($1::text[]) ORDER BY projection, position",
                list(EVENT_MODELS),
            )
        ]
        return out
    finally:
        await conn.close()


async def check_quiet(db_url: str, nc, load: SteadyLoad) -> tuple[int, int]:
    """With the load paused: the projections catch up, every read model equals a rebuild, and
    (lost, duplicated) of the acknowledged events so far; then the load goes on."""
    await load.pause()
    try:
        # an unanswered batch may have been appended all the same: wait for the log's last event
        tail = await EventLog(nc).read_subject("milestones.events.>", after=load.last)
        await time_to_reach(db_url, max([load.last, *(m.seq for m in tail)]), 30)
        await assert_equals_rebuild(db_url, nc)
        return await lost_and_duplicated(nc, load.acked)
    finally:
        load.resume()


async def assert_equals_rebuild(db_url: str, nc) -> dict[str, list]:
    """The live read models (caught up, nothing arriving) equal a rebuild from position 1."""
    live = await read_models(db_url)
    await rebuild([PROJECTIONS[name] for name in EVENT_MODELS], db_url, nc)
    rebuilt = await read_models(db_url)
    for table, rows in live.items():
        assert rows == rebuilt[table], f"{table} differs from a rebuild"
    return live
