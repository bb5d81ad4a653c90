"""Real servers for tests: a nats-server per test (fresh store, free port, fsync always) and one
PostgreSQL database per run (on $DATABASE_URL's server when set, else an embedded cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import tempfile
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
from services.auth.identity import ServiceIdentity
from services.notify.secretbox import Keyring

logs.configure("console", os.environ.get("MILESTONES_TEST_LOG_LEVEL", "warning"))


TEST_SECRET_KEY = Keyring.generate("tests")  # encrypts webhook secrets in every test's log


@pytest.fixture(scope="session")
def identity() -> ServiceIdentity:
    """The services' NATS identity (generated once: bcrypt is slow on purpose)."""
    return ServiceIdentity.generate()


@pytest.fixture
def nats_server(tmp_path: Path, identity: ServiceIdentity):
    """A nats-server with the accounts of production: anonymous clients get nothing."""
    server = EmbeddedNats(tmp_path / "nats", identity=identity).start()
    yield server
    server.stop()


def service_settings(server: EmbeddedNats, **values: object) -> Settings:
    assert server.identity is not None
    login, system = server.identity.service, server.identity.system
    return Settings(
        **{
            "nats_url": server.url,
            "nats_user": login.user,
            "nats_password": login.password,
            "nats_system_user": system.user,
            "nats_system_password": system.password,
            "nats_auth_file": str(server.credentials_file),
            **values,
        }
    )


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    # No deadline scheduler by default: a schedule fired for a past due date would add events
    # while a test compares the log with a read model. tests/test_deadlines.py turns it on.
    return service_settings(
        nats_server,
        data_dir=str(tmp_path),
        command_workers=64,
        scheduler=False,
        webhook_allow_hosts="127.0.0.1",  # the tests' local webhook receivers
        secret_key=TEST_SECRET_KEY,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    """The CLI as the services' own identity (who may do what is tested in test_security)."""
    return {
        "MILESTONES_NATS_URL": settings.nats_url,
        "MILESTONES_NATS_USER": settings.nats_user or "",
        "MILESTONES_NATS_PASSWORD": settings.nats_password or "",
    }


async def connect(server: EmbeddedNats, user: str | None = None, password: str | None = None):
    """A client of ``server``: the services' identity unless a user is given."""
    if user is None:
        assert server.identity is not None
        user, password = server.identity.service.user, server.identity.service.password
    return await nats.connect(server.url, user=user, password=password)


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[nats.NATS]:
    """A connection with the services' own identity: raw stream access, in-account commands."""
    client = await connect(nats_server)
    yield client
    await client.close()


@pytest.fixture
async def intake(settings: Settings):
    from services.app.wiring import intake as run_intake

    async with run_intake(settings) as running:
        yield running


@pytest.fixture(scope="session")
def database_url() -> str:
    """A database created for this test run."""
    import asyncpg

    base = os.environ.get("DATABASE_URL") or os.environ.get("MILESTONES_DATABASE_URL")
    pg = None
    if not base:
        # not under pytest's basetemp: pytest keeps the last three runs' and deletes older ones,
        # so a second run started meanwhile deleted this cluster's files under a running suite
        # (every later test: "connection refused"); deleted by the fixture when it stops
        data = Path(tempfile.mkdtemp(prefix="milestones-test-pg-")) / "data"
        pg = EmbeddedPostgres(data, delete_on_stop=True).start()
        base = pg.url
    name = f"milestones_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = with_database(base, name)

    async def prepare_template() -> None:
        from projections import PROJECTIONS
        from projections.db import ensure_schema

        await ensure_schema(url, list(PROJECTIONS.values()))

    asyncio.run(prepare_template())
    yield url
    if pg is not None:
        pg.stop()
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture
async def db_url(database_url: str) -> AsyncIterator[str]:
    """A fresh database per test, cloned from the run's template (schema already created)."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name(database_url)}"')
    finally:
        await admin.close()
    yield with_database(database_url, name)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def template_name(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/")


def with_database(url: str, name: str) -> str:
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


__all__ = ["cli_env", "cloudevent", "connect", "msgspec", "plan_project", "request", "wait_for"]


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


# == HTTP credentials for tests ====================================================================
# One in-memory credential per role, behind the Authenticator protocol (services.auth.principal).
# The lead replaces this block with real credentials (services.auth): every test reaches them
# through these names only — TEST_TOKENS, auth_headers(role), MemoryAuthenticator, and the
# `authenticator` fixture.
from services.auth.principal import Principal as _Principal  # noqa: E402

TEST_TOKENS = {
    "reader": "test-reader-token",
    "auditor": "test-auditor-token",
    "admin": "test-admin-token",
    "publisher": "test-publisher-token",
}


def role_principals() -> dict[str, _Principal]:
    """Token -> principal: one per role; the publisher may use the sources the tests send."""
    return {
        token: _Principal(
            id=f"test-{role}",
            role=role,  # type: ignore[arg-type]
            sources=frozenset({"tests", "test"}) if role == "publisher" else frozenset(),
        )
        for role, token in TEST_TOKENS.items()
    }


class MemoryAuthenticator:
    """The Authenticator protocol over a dict (token -> principal); ``revoke`` forgets a token."""

    def __init__(self, principals: dict[str, _Principal] | None = None) -> None:
        self.by_token = dict(role_principals() if principals is None else principals)

    async def bearer(self, token: str) -> _Principal | None:
        return self.by_token.get(token)

    def by_credential(self, credential_id: str) -> _Principal | None:
        return next((p for p in self.by_token.values() if p.id == credential_id), None)

    def add(self, token: str, principal: _Principal) -> None:
        self.by_token[token] = principal

    def revoke(self, token: str) -> None:
        self.by_token.pop(token, None)


def auth_headers(role: str = "reader") -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKENS[role]}"}


@pytest.fixture
def authenticator() -> MemoryAuthenticator:
    return MemoryAuthenticator()


def role_auth():
    """httpx auth for the functional tests' client: the publisher for POST /events, the admin
    (who may read everything) otherwise, unless the test sends its own Authorization. Who may
    do what is tested in tests/test_http_auth.py."""
    import httpx

    class RoleAuth(httpx.Auth):
        def auth_flow(self, request: httpx.Request):
            if "authorization" not in request.headers:
                publishing = request.method == "POST" and request.url.path == "/events"
                role = "publisher" if publishing else "admin"
                request.headers["authorization"] = auth_headers(role)["Authorization"]
            yield request

    return RoleAuth()


@contextlib.asynccontextmanager
async def http_client(system, authenticator, timeout: float = 30):
    """The HTTP app of ``system`` in process, and a client that signs in as the role each route
    needs (the admin reads everything): yields (client, app)."""
    import httpx

    from services.app.http import build_http_app

    app = build_http_app(
        system.intake,
        max_body=256 * 1024,
        authenticator=authenticator,
        extra_handlers=system.http_handlers,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        timeout=timeout,
        auth=role_auth(),
    ) as client:
        yield client, app


@pytest.fixture
async def http(intake):
    """The intake's HTTP app in process (``POST /events``), signing in as the route needs."""
    async with http_client(intake, MemoryAuthenticator()) as (client, _app):
        yield client


@pytest.fixture
async def api(system, authenticator):
    async with http_client(system, authenticator) as (client, _app):
        yield client


async def append_as_before(nc, event_id: str, source: str, data: object) -> int:
    """Append ``data`` raw, as an older version of the intake stored it (the log is append-only,
    so today's code must read it as it is), on its project's subject, or its milestone's for a
    milestone event; returns its position."""
    from events import StoredEvent
    from events.subjects import EVENTS_STREAM, milestone_subject, project_subject

    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    milestone = getattr(data, "milestone_id", None)
    subject = (
        project_subject(data.project_id)  # type: ignore[attr-defined]
        if milestone is None
        else milestone_subject(data.project_id, milestone)  # type: ignore[attr-defined]
    )
    stored = StoredEvent(
        id=event_id,
        source=source,
        type=type(data).__name__,
        subject=subject,
        time=t0,
        recordedtime=t0,
        correlationid=event_id,
        causationid=event_id,
        data=data,
    )
    ack = await nc.jetstream().publish(subject, ENCODER.encode(stored), stream=EVENTS_STREAM)
    return ack.seq
