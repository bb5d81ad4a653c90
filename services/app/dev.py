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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgspec
import structlog

from services.app.settings import Settings
from services.auth.credentials import CredentialStore
from services.auth.identity import NatsLogin, ServiceIdentity, load_or_create, write_private
from services.auth.principal import Principal, Role
from services.notify.secretbox import ensure_key_file

if TYPE_CHECKING:
    from services.app.embedded import EmbeddedNats, EmbeddedPostgres
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
    nats_url: str
    http_url: str
    credentials: dict[str, DevCredential]


DEV_ROLES: tuple[Role, ...] = ("publisher", "reader", "auditor", "admin")
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


async def ensure_dev_credentials(settings: Settings, data_dir: Path, http_url: str) -> Path:
    """Keep the credentials of an earlier ``dev.json`` that are still live; issue the rest."""
    from services.app.wiring import connect_services, prepare_streams

    path = data_dir / DEV_FILE
    earlier: dict[str, DevCredential] = {}
    if path.exists():
        try:
            earlier = msgspec.json.decode(path.read_bytes(), type=DevFile).credentials
        except msgspec.DecodeError:
            log.warning("dev.json unreadable: issuing new credentials", path=str(path))
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
        await store.stop()
    finally:
        await nc.close()
    document = {"nats_url": settings.nats_url, "http_url": http_url, "credentials": entries}
    write_private(path, msgspec.json.format(msgspec.json.encode(document)))
    return path


# -- the embedded servers, started and stopped within bounds --------------------------------------
T = TypeVar("T")


async def in_daemon_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` in a daemon thread: unlike ``asyncio.to_thread`` (the loop's executor, whose
    threads the interpreter waits for at exit) a blocking call abandoned on shutdown cannot keep
    the process up."""
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


def kill_postgres(pgdata: Path) -> None:
    """PostgreSQL's immediate shutdown (SIGQUIT to the postmaster): what ``pg_ctl -m immediate``
    does; the next start recovers from the WAL like after a crash."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
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
    if not done:
        log.warning("postgres did not stop in time: immediate shutdown", pgdata=str(pg.pgdata))
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
