"""What `milestones dev` sets up on first start and finds again after: the services' identity,
one credential per role, the webhook-secret key, and ``<data-dir>/dev.json`` for the CLI; and
how it stops the servers it started within the shutdown's bound."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence, Set
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import structlog

from services.app.embedded import free_port, port_is_free
from services.app.reaper import postmaster_pid
from services.app.settings import Settings
from services.auth.credentials import CredentialStore
from services.auth.identity import NatsLogin, ServiceIdentity, load_or_create, write_private
from services.auth.principal import Principal, Role
from services.notify.secretbox import ensure_key_file
from services.query.calendar import feed_url

if TYPE_CHECKING:
    from services.app.embedded import EmbeddedNats, EmbeddedPostgres
    from services.app.reaper import Reaper
    from services.app.supervise import Shutdown

log = structlog.get_logger("milestones.dev")

DEV_FILE = "dev.json"


class DevCredential(msgspec.Struct, frozen=True, kw_only=True):
    """One role's entry of ``dev.json``: the shape ``credentials create --json`` prints."""

    id: str
    role: str
    http_token: str
    nats: NatsLogin | None = None
    sources: list[str] = []
    projects: list[str] = []


class DevFile(msgspec.Struct, frozen=True, kw_only=True):
    """``<data-dir>/dev.json``: where the running dev answers and who may ask. Written before
    dev says it is ready; the fields after ``credentials`` have defaults so older files decode."""

    nats_url: str
    http_url: str
    credentials: dict[str, DevCredential]
    dashboard_url: str | None = None
    events_url: str | None = None  # HTTP POST of CloudEvents
    docs_url: str | None = None  # the API's document and its page
    ready_url: str | None = None  # /ready: NATS, database, runners (no credential needed)
    metrics_url: str | None = None
    database_url: str | None = None  # a password is masked
    data_dir: str | None = None
    pid: int | None = None  # of the dev that wrote it (dev.lock says whether it still runs)
    started_at: str | None = None
    ports: dict[str, int] = {}  # nats, http, ops: what the next dev on this data dir prefers
    # named credentials of the demo's decision gate (reader credentials named dana and lee)
    approvers: dict[str, DevCredential] = {}
    # `dev --demo`: a feed credential for the demo project, and its calendar's address
    feed: DevCredential | None = None
    feed_url: str | None = None


DEV_ROLES: tuple[Role, ...] = ("publisher", "reader", "auditor", "admin")
# reader credentials by name: the approvers of the demo's decision gate (services.app.demo)
DEV_APPROVERS = ("dana", "lee")  # = services.app.demo.APPROVERS
DEV_SOURCES = ["milestones-cli", "ci", "tracker", "planning"]  # what the README's examples use
DEV = Principal(id="system:milestones-dev", role="admin", via="system")
LOOPBACK = "127.0.0.1,localhost,::1"  # local webhook receivers are fine in development


def identity(data_dir: Path) -> ServiceIdentity:
    return load_or_create(data_dir / "identity" / "service.json")


def dev_settings(
    settings: Settings, data_dir: Path, ident: ServiceIdentity, **values: object
) -> Settings:
    """The settings of every service `dev` runs: its identity, keys and loopback webhooks."""
    keys = data_dir / "identity"
    if not settings.secret_key and not settings.secret_key_file:
        ensure_key_file(keys / "secret.key")  # 0600: encrypts webhook secrets in the log
    return msgspec.structs.replace(
        settings,
        nats_user=ident.service.user,
        nats_password=ident.service.password,
        nats_system_user=ident.system.user,
        nats_system_password=ident.system.password,
        nats_auth_file=str(data_dir / "nats" / "credentials.conf"),
        secret_key_file=settings.secret_key_file or str(keys / "secret.key"),
        signing_key_file=settings.signing_key_file or str(keys / "log-signing.pem"),
        webhook_allow_hosts=settings.webhook_allow_hosts or LOOPBACK,
        **values,
    )


def earlier_dev_file(data_dir: Path) -> DevFile | None:
    path = data_dir / DEV_FILE
    if not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=DevFile)
    except (OSError, msgspec.DecodeError):
        log.warning("dev.json unreadable: issuing new credentials", path=str(path))
        return None


def url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def endpoints(settings: Settings, data_dir: Path, started_at: str) -> dict[str, object]:
    """What ``dev.json`` says besides the credentials: every URL a newcomer or the CLI needs."""
    http = url(settings.http_host, settings.http_port)
    ops = url(settings.ops_host, settings.ops_port) if settings.ops_port else http
    ports = {"nats": int(settings.nats_url.rsplit(":", 1)[1]), "http": settings.http_port}
    if settings.ops_port:
        ports["ops"] = settings.ops_port
    return {
        "nats_url": settings.nats_url,
        "http_url": http,
        "dashboard_url": f"{http}/ui",
        "events_url": f"{http}/events",
        "docs_url": f"{http}/schema",
        "ready_url": f"{ops}/ready",
        "metrics_url": f"{ops}/metrics",
        "database_url": masked(settings.database_url),
        "data_dir": str(data_dir),
        "pid": os.getpid(),
        "started_at": started_at,
        "ports": ports,
    }


def masked(database_url: str | None) -> str | None:
    """The URL without its password (the embedded PostgreSQL's unix socket needs none)."""
    if not database_url:
        return database_url
    parts = urlsplit(database_url)
    if not parts.password:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def choose_port(
    service: str,
    preferred: Sequence[int | None],
    host: str = "127.0.0.1",
    avoid: Set[int] = frozenset(),
) -> int:
    """The first of ``preferred`` that is free (a flag, then the port an earlier dev on this data
    dir used, then the default), else any free port."""
    wanted = list(dict.fromkeys(p for p in preferred if p))
    port = next((p for p in wanted if p not in avoid and port_is_free(p, host)), None)
    while port is None or port in avoid:
        port = free_port(host)
    if wanted and port != wanted[0]:
        taken = wanted[: wanted.index(port)] if port in wanted else wanted
        log.info("port taken, using another", service=service, taken=taken, port=port)
    return port


async def ensure_dev_credentials(
    settings: Settings,
    data_dir: Path,
    endpoints: dict[str, object],
    feed_project: str | None = None,
) -> Path:
    """Keep the credentials of an earlier ``dev.json`` that are still live; issue the rest;
    write ``dev.json`` with them and ``endpoints``. ``feed_project`` (``dev --demo``): also a
    feed credential for that project (an earlier live one is kept either way)."""
    from services.app.wiring import connect_services, prepare_streams

    path = data_dir / DEV_FILE
    previous = earlier_dev_file(data_dir)
    earlier = previous.credentials if previous is not None else {}
    nc = await connect_services(settings, "milestones-dev")
    try:
        await prepare_streams(nc, settings)
        store = CredentialStore(nc, slots=settings.nats_account_slots)
        await store.start()
        entries = {}
        for role in DEV_ROLES:
            kept = earlier.get(role)
            if kept is not None and store.by_credential(kept.id) is not None:
                entries[role] = msgspec.to_builtins(kept)
                continue
            sources = DEV_SOURCES if role == "publisher" else []
            issued = await store.issue(role, name=f"dev {role}", sources=sources, by=DEV)
            entries[role] = issued.as_dev_entry()
            log.info("credential issued", role=role, credential=issued.credential.id)
        approvers = {}
        before = previous.approvers if previous is not None else {}
        for name in DEV_APPROVERS:
            kept = before.get(name)
            if kept is not None and store.by_credential(kept.id) is not None:
                approvers[name] = msgspec.to_builtins(kept)
                continue
            issued = await store.issue("reader", name=name, sources=[], by=DEV)
            approvers[name] = issued.as_dev_entry()
            log.info("credential issued", role="reader", name=name, credential=issued.credential.id)
        feed = await _dev_feed(store, previous, feed_project)
        await store.stop()
    finally:
        await nc.close()
    extra: dict[str, object] = {}
    if feed is not None:
        extra["feed"] = feed
        extra["feed_url"] = feed_url(
            str(endpoints["http_url"]), feed["projects"], feed["http_token"]
        )
    document = msgspec.convert(
        {**endpoints, "credentials": entries, "approvers": approvers, **extra}, DevFile
    )
    write_private(path, msgspec.json.format(msgspec.json.encode(document)))
    return path


async def _dev_feed(
    store: CredentialStore, previous: DevFile | None, project: str | None
) -> dict | None:
    """The demo's calendar feed credential: the earlier one while it is live (and, when a
    project is asked for, is that project's), else a new one for ``project``."""
    kept = previous.feed if previous is not None else None
    if kept is not None and store.by_credential(kept.id) is not None:
        if project is None or kept.projects == [project]:
            return msgspec.to_builtins(kept)
    if project is None:
        return None
    issued = await store.issue("feed", name=f"{project} calendar", projects=[project], by=DEV)
    log.info("credential issued", role="feed", project=project, credential=issued.credential.id)
    return issued.as_dev_entry()


# -- the embedded servers, started and stopped within bounds --------------------------------------
T = TypeVar("T")
TERMINAL_SIGNALS = {signal.SIGINT, signal.SIGQUIT}


async def in_daemon_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` in a daemon thread: unlike ``asyncio.to_thread`` (the loop's executor, whose
    threads the interpreter waits for at exit) a blocking call abandoned on shutdown cannot keep
    the process up. The terminal's Ctrl-C is blocked in the thread, and so in what it runs
    (initdb, pg_ctl inherit the mask): Ctrl-C during a start stops dev, which stops the servers
    in order, instead of killing initdb half-way."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, TERMINAL_SIGNALS)
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future


async def start_in_thread(
    starting: list[asyncio.Task], fn: Callable[[], object], name: str
) -> None:
    """Start a server in a daemon thread, shielded: a stop during start-up waits (bounded) for
    it to be up before stopping it, so none is left running behind the process. ``starting``
    collects the starts for that wait."""
    task = asyncio.ensure_future(in_daemon_thread(fn, name))
    task.add_done_callback(_start_outcome)  # a start a stop abandoned is said, not left unread
    starting.append(task)
    await asyncio.shield(task)


def _start_outcome(task: asyncio.Task) -> None:
    if task.cancelled() or (error := task.exception()) is None:
        return
    log.debug("embedded server start failed", error=repr(error))  # also raised to the start


def start_nats(server: EmbeddedNats, reaper: Reaper) -> None:
    server.spawn()
    assert server.proc is not None
    reaper.watch("nats", server.proc.pid)  # before the wait: a kill during it is covered
    server.wait_listening()


def start_postgres(pg: EmbeddedPostgres, reaper: Reaper) -> None:
    reaper.watch_pgdata(pg.pgdata)  # covers a kill during initdb and pg_ctl start
    pg.start()
    pid = postmaster_pid(pg.pgdata)
    if pid is not None:
        reaper.watch("postgres", pid)


def kill_postgres(pgdata: Path) -> None:
    """PostgreSQL's immediate shutdown (SIGQUIT to the postmaster): what ``pg_ctl -m immediate``
    does; the next start recovers from the WAL like after a crash."""
    pid = postmaster_pid(pgdata)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGQUIT)


async def stop_nats_server(server: EmbeddedNats, seconds: float) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + max(seconds, 0.0)
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        log.warning("nats-server did not stop in time: killed", pid=proc.pid)
        server.kill()


async def stop_postgres(pg: EmbeddedPostgres, seconds: float) -> None:
    stopping = asyncio.ensure_future(in_daemon_thread(pg.stop, "postgres-stop"))
    done, _ = await asyncio.wait({stopping}, timeout=max(seconds, 0.0))
    error = stopping.exception() if done else None  # read: never "exception was never retrieved"
    if done and error is None:
        return
    reason = "did not stop in time" if not done else f"stop failed ({error!r})"
    log.warning(f"postgres {reason}: immediate shutdown", pgdata=str(pg.pgdata))
    kill_postgres(pg.pgdata)
    stopping.cancel()


async def stop_embedded(
    shutdown: Shutdown, nats_server: EmbeddedNats, pg: EmbeddedPostgres | None
) -> None:
    """After the services: both servers stop together, each within what the shutdown has left
    (``Shutdown.reserve`` kept that back for them)."""
    budget = min(5.0, shutdown.remaining(1.0))  # done before the shutdown's last resorts
    try:
        await asyncio.gather(
            stop_nats_server(nats_server, budget),
            stop_postgres(pg, budget) if pg is not None else asyncio.sleep(0),
        )
    except asyncio.CancelledError:  # the shutdown's deadline: none may outlive the process
        nats_server.kill()
        if pg is not None:
            kill_postgres(pg.pgdata)
        raise
