"""Real servers for tests: a nats-server per test (fresh store, free port, fsync always) and one
PostgreSQL database per run (on $DATABASE_URL's server when set, else an embedded cluster)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import nats
import pytest

from events import ENCODER, REPLY_DECODER, Reply
from services.app import logs
from services.app.embedded import EmbeddedNats, EmbeddedPostgres
from services.app.settings import Settings

logs.configure("console", os.environ.get("MILESTONES_TEST_LOG_LEVEL", "warning"))


@pytest.fixture
def nats_server(tmp_path: Path):
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    # No deadline scheduler by default: a schedule fired for a past due date would add events
    # while a test compares the log with a read model. tests/test_deadlines.py turns it on.
    return Settings(
        nats_url=nats_server.url, data_dir=str(tmp_path), command_workers=64, scheduler=False
    )


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def intake(settings: Settings):
    from services.app.wiring import intake as run_intake

    async with run_intake(settings) as running:
        yield running


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database created for this test run."""
    import asyncpg

    base = os.environ.get("DATABASE_URL") or os.environ.get("MILESTONES_DATABASE_URL")
    pg = None
    if not base:
        pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", delete_on_stop=True).start()
        base = pg.url
    name = f"milestones_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = _with_database(base, name)

    async def prepare_template() -> None:
        from projections import PROJECTIONS
        from projections.db import ensure_schema

        await ensure_schema(url, list(PROJECTIONS.values()))

    asyncio.run(prepare_template())
    yield url
    if pg is not None:
        pg.stop()


@pytest.fixture
async def db_url(database_url: str) -> AsyncIterator[str]:
    """A fresh database per test, cloned from the run's template (schema already created)."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_template_name(database_url)}"')
    finally:
        await admin.close()
    yield _with_database(database_url, name)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _template_name(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/")


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


# -- helpers ---------------------------------------------------------------------------------------
def cloudevent(
    type_: str,
    data: dict,
    *,
    id: str | None = None,
    source: str = "tests",
    time: str = "2026-11-24T10:00:00Z",
    **ext: object,
) -> dict:
    return {
        "specversion": "1.0",
        "id": id or uuid.uuid4().hex,
        "source": source,
        "type": type_,
        "time": time,
        "data": data,
        **ext,
    }


async def request(nc: nats.NATS, ce: dict | list | bytes, subject: str | None = None) -> Reply:
    body = ce if isinstance(ce, bytes) else ENCODER.encode(ce)
    if subject is None:
        subject = f"milestones.commands.{ce['type'] if isinstance(ce, dict) else 'batch'}"
    msg = await nc.request(subject, body, timeout=10)
    return REPLY_DECODER.decode(msg.data)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait on a condition with a deadline (no fixed sleeps standing in for synchronisation)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def plan_project(
    project: str = "p1",
    milestone: str = "m1",
    kind: str = "event",
    tasks: tuple[str, ...] = ("t1", "t2"),
    due: str = "2026-12-01",
) -> list[dict]:
    events = [
        cloudevent("ProjectCreated", {"project_id": project, "name": "Project"}),
        cloudevent(
            "MilestonePlanned",
            {
                "project_id": project,
                "milestone_id": milestone,
                "name": "Milestone",
                "kind": kind,
                "due": due,
            },
        ),
    ]
    events += [
        cloudevent(
            "TaskAdded",
            {"project_id": project, "milestone_id": milestone, "task_id": t, "title": f"Task {t}"},
        )
        for t in tasks
    ]
    return events


TODAY = dt.date(2026, 11, 24)  # the default CloudEvent time of cloudevent()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


__all__ = ["cloudevent", "msgspec", "plan_project", "request", "wait_for"]


@pytest.fixture
async def system(settings: Settings, db_url: str):
    """Intake, projections and queries in one process, as `milestones dev` runs them."""
    from services.app.wiring import running

    full = msgspec.structs.replace(settings, database_url=db_url)
    async with running(full, intake=True, projections=True, query=True) as run:
        run.queries.today = lambda: (
            TODAY
        )  # the clock is an input: pinned to the day the test events carry
        yield run


@pytest.fixture
async def api(system):
    import httpx

    from services.app.http import build_http_app

    app = build_http_app(system.intake, max_body=256 * 1024, extra_handlers=system.http_handlers)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
    ) as client:
        yield client


async def caught_up(
    db_url: str, position: int, projections: tuple[str, ...] = ("status", "history", "audit")
) -> None:
    """Wait until every named projection's checkpoint has reached ``position``."""
    from projections.db import connect

    conn = await connect(db_url)
    try:

        async def reached() -> bool:
            rows = await conn.fetch(
                "SELECT projection, position FROM checkpoints WHERE projection = ANY($1::text[])",
                list(projections),
            )
            return len(rows) == len(projections) and all(r["position"] >= position for r in rows)

        await wait_for(reached, timeout=60, what=f"projections {projections} to reach {position}")
    finally:
        await conn.close()
