"""The one wiring module: settings -> logging, NATS, streams, database, broker, runners, HTTP.

``running(settings, ...)`` assembles any mix of the four services in one process:
``milestones dev`` runs all of them; ``milestones serve <service>`` one (compose.yaml). Its
long-lived tasks run under a ``Supervisor`` and everything it opens is closed by a ``Closer``,
each step bounded (``services.app.supervise``); ``/ready`` reads both (``readiness``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import structlog
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from nats.aio.client import Client as NATS
from nats.js.errors import ServiceUnavailableError

from events.errors import StartupError
from projections import PROJECTIONS, nats_headers
from projections.db import create_pool, ensure_schema
from projections.runner import Runner, groups
from projections.watch import CheckpointWatcher
from services.app import probe, runtime
from services.app.http import build_http_app, ready_route
from services.app.plan_import import plan_import_routes
from services.app.readiness import LateAuthenticator, Readiness
from services.app.serving import bind, close_nats, ops_listener, serve_http, stop_broker
from services.app.settings import Settings
from services.app.supervise import Closer, Shutdown, Supervisor
from services.app.telemetry import Telemetry
from services.app.telemetry import start as start_tracing
from services.auth.credentials import CredentialStore
from services.auth.natsconf import AccountsSync
from services.auth.principal import NOBODY, Principal
from services.dashboard.routes import dashboard_routes
from services.eventlog.log import EventLog
from services.eventlog.streams import (
    check_server_version,
    checkpoints_stream_config,
    ensure_stream,
    events_stream_config,
    inbox_stream_config,
    rejections_stream_config,
)
from services.intake.commands import CommandServer
from services.intake.committer import Committer
from services.intake.deadlines import Scheduler
from services.intake.inbox import InboxConsumer
from services.intake.parse import Limits
from services.intake.service import IntakeService
from services.intake.webhooks import configured as webhooks_configured
from services.ledger.keys import PublicKey, key_path, load_or_create, load_public
from services.ledger.note import ORIGIN
from services.ledger.routes import ledger_routes
from services.ledger.view import LedgerView
from services.ledger.writer import CheckpointWriter
from services.notify.notifier import Notifier
from services.notify.secretbox import keyring_from_settings
from services.notify.store import ensure_schema as ensure_notifier_schema
from services.notify.targets import TargetPolicy
from services.query.calendar_routes import calendar_routes
from services.query.http_routes import query_routes
from services.query.nats_handlers import register_queries
from services.query.plan_routes import plan_routes
from services.query.queries import Queries, today_utc

log = structlog.get_logger("milestones")


async def connect_nats(
    url: str,
    name: str = "milestones",
    user: str | None = None,
    password: str | None = None,
) -> NATS:
    async def quiet(exc: Exception) -> None:  # nats-py's default prints a traceback per attempt
        log.warning("nats error", error=str(exc) or type(exc).__name__)

    nats_headers.install()  # every service's client parses headers the faster way
    try:
        nc = await nats.connect(
            url.split(","),
            name=name,
            user=user,
            password=password,
            connect_timeout=5,
            # Services keep trying for ever (a restarted server is picked up again). A one-shot
            # command connects through ``services.cli.client`` instead: nats-py 2.16's
            # ``allow_reconnect=False`` still retries a refused first connection without end.
            max_reconnect_attempts=-1,
            error_cb=quiet,
            drain_timeout=2,  # a drain on shutdown is bounded anyway (services.app.supervise)
        )
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        if "Authorization Violation" in reason:
            raise StartupError(
                f"NATS at {url} refused the credentials{f' of user {user}' if user else ''}:"
                " check MILESTONES_NATS_USER / MILESTONES_NATS_PASSWORD (README, Security)"
            ) from exc
        raise StartupError(
            f"cannot reach NATS at {url}: {reason} (is nats-server running?)"
        ) from exc
    check_server_version(nc)
    return nc


async def connect_services(settings: Settings, name: str = "milestones") -> NATS:
    """A connection with the services' own identity (the MILESTONES account)."""
    return await connect_nats(settings.nats_url, name, settings.nats_user, settings.nats_password)


async def prepare_streams(nc: NATS, settings: Settings, patience: float = 10.0) -> None:
    """The streams, created or checked. JetStream's API can have no responder for a moment (a
    service starting while the intake has the server reload its accounts): asked again for up
    to ``patience`` seconds before it is a start-up error."""
    deadline = asyncio.get_running_loop().time() + patience
    for config in (
        events_stream_config(settings.stream_replicas),
        inbox_stream_config(settings.stream_replicas),
        rejections_stream_config(settings.stream_replicas),
        checkpoints_stream_config(settings.stream_replicas),
    ):
        while True:
            try:
                await ensure_stream(nc, config)
                break
            except ServiceUnavailableError:
                if asyncio.get_running_loop().time() > deadline:
                    raise StartupError(
                        f"JetStream did not answer for {patience:g} s: is JetStream enabled on"
                        " the NATS server, for the services' account?"
                    ) from None
                await asyncio.sleep(0.2)


def jwt_verifier(settings: Settings):  # -> (token) -> Principal | None, or None
    if not settings.jwt_jwks_url:
        return None
    from services.auth.jwt import JwtVerifier

    if not settings.jwt_issuer or not settings.jwt_audience:
        raise StartupError(
            "MILESTONES_JWT_JWKS_URL is set: set MILESTONES_JWT_ISSUER and MILESTONES_JWT_AUDIENCE"
            " too, so tokens of other issuers and audiences are refused"
        )
    return JwtVerifier(
        settings.jwt_jwks_url, settings.jwt_issuer, settings.jwt_audience, settings.jwt_role_claim
    ).verify


def public_key(settings: Settings) -> PublicKey:
    """The log key's public half; the first of the services to start creates the key (the
    creation is race-free, so an intake starting beside the query service signs with it)."""
    path = key_path(settings.data_dir, settings.signing_key_file)
    try:
        return load_public(path)
    except FileNotFoundError:
        return load_or_create(path).public


def require_database(settings: Settings) -> str:
    if not settings.database_url:
        raise StartupError(
            "no database: set MILESTONES_DATABASE_URL (or run `milestones dev`, which embeds one)"
        )
    return settings.database_url


@dataclass
class Running:
    settings: Settings
    nc: NATS
    broker: NatsBroker
    intake: IntakeService | None = None
    committer: Committer | None = None
    queries: Queries | None = None
    notifier: Notifier | None = None
    closing: asyncio.Event = field(
        default_factory=asyncio.Event
    )  # set first on stop: live streams end
    runners: list[Runner] = field(default_factory=list)
    auth: CredentialStore | None = None
    checkpoints: CheckpointWriter | None = None
    accounts: AccountsSync | None = None
    http_handlers: list = field(default_factory=list)
    supervisor: Supervisor = field(default_factory=Supervisor)
    readiness: Readiness = field(default_factory=Readiness)


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    intake: bool = True,
    projections: bool = False,
    query: bool = False,
    notifier: bool = False,
    shutdown: Shutdown | None = None,
    readiness: Readiness | None = None,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[Running]:
    """The services, started; on exit every task stops and every connection closes within
    ``settings.shutdown_timeout_s`` whatever state the servers are in (``supervise``)."""
    shutdown = shutdown or Shutdown(settings.shutdown_timeout_s)
    supervisor = supervisor or Supervisor(shutdown.stop)
    readiness = readiness or Readiness(stall_after=settings.ready_stall_s)
    closer = Closer(shutdown)
    closing = asyncio.Event()
    try:
        nc = await connect_services(settings)
        closer.push("nats", lambda: close_nats(nc), fallback=nc.close)
        closer.push("readiness", readiness.close, cap=1.0)
        await prepare_streams(nc, settings)
        broker = NatsBroker(
            settings.nats_url.split(","),
            security=(
                SASLPlaintext(username=settings.nats_user, password=settings.nats_password or "")
                if settings.nats_user
                else None
            ),
            logger=None,
            graceful_timeout=3,
        )
        run = Running(
            settings, nc, broker, closing=closing, supervisor=supervisor, readiness=readiness
        )
        run.auth = CredentialStore(nc, jwt_verifier(settings), slots=settings.nats_account_slots)
        await run.auth.start()
        closer.push("credentials", run.auth.stop, cap=1.0)
        dsn = None
        if projections or query or notifier:
            dsn = require_database(settings)
            await ensure_schema(dsn, list(PROJECTIONS.values()))
        if intake:
            run.committer = Committer(EventLog(nc), max_attempts=settings.append_attempts)
            await run.committer.start()
            closer.push("committer", run.committer.stop)
            run.intake = IntakeService(
                nc,
                run.committer,
                Limits(settings.max_message_bytes, settings.max_batch_events),
                auth=run.auth,
                webhooks=webhooks_configured(
                    settings.secret_key, settings.secret_key_file, settings.webhook_allow_hosts
                ),
            )
            # the intake's process signs checkpoints of the log (several intakes: safe, OCC);
            # the key is made here, before the query routes read its public half
            signing = load_or_create(key_path(settings.data_dir, settings.signing_key_file))
            run.checkpoints = CheckpointWriter(nc, signing, ORIGIN, every_s=2.0)
            commands = CommandServer(
                nc, run.intake, workers=settings.command_workers, auth=run.auth
            )
            await commands.start()
            closer.push("commands", commands.stop)  # answers in flight: bounded, not 30 s
        if query or notifier:
            assert dsn is not None
            pool = await create_pool(dsn, min_size=2, max_size=16)
            closer.push("database pool", pool.close, fallback=pool.terminate)
            async with pool.acquire() as conn:
                await ensure_notifier_schema(conn)
            watcher = CheckpointWatcher(dsn)
            await watcher.start()
            closer.push("checkpoint watcher", watcher.stop, cap=1.0)
        if query:
            run.queries = Queries(
                pool,
                watcher,
                EventLog(nc),
                at_risk_gap=settings.at_risk_gap,
                memo_chars=settings.query_memo_chars,
            )
            register_queries(broker, run.queries, run.auth)
            run.http_handlers = [
                *query_routes(run.queries),
                *calendar_routes(run.queries),
                *plan_routes(run.queries),
                *(plan_import_routes(run.queries, run.intake) if run.intake is not None else ()),
                *dashboard_routes(run.queries, run.closing),
                *ledger_routes(LedgerView(nc, public_key(settings), ORIGIN)),
            ]
        run.http_handlers.append(ready_route(readiness))
        await broker.start()
        closer.push("query handlers", lambda: stop_broker(broker))
        if run.intake is not None:
            inbox = InboxConsumer(nc, run.intake, batch=settings.inbox_batch)
            supervisor.start("inbox", inbox.run)
            if settings.scheduler:
                supervisor.start("scheduler", lambda stop: Scheduler(nc).run(stop))
            if run.checkpoints is not None:
                supervisor.start("ledger", run.checkpoints.run)
        if run.intake is not None and settings.nats_auth_file:
            # the intake's process keeps the server's accounts equal to the credentials
            system = await connect_nats(
                settings.nats_url,
                "milestones-accounts",
                settings.nats_system_user,
                settings.nats_system_password,
            )
            closer.push("nats (system)", system.close, cap=1.0)
            run.accounts = AccountsSync(run.auth, Path(settings.nats_auth_file), system)
            await run.accounts.sync()
            supervisor.start("accounts", run.accounts.run)
        if notifier:
            run.notifier = Notifier(
                nc,
                pool,
                watcher,
                today=today_utc,
                at_risk_gap=settings.at_risk_gap,
                max_attempts=settings.notify_max_attempts,
                backoff_base=settings.notify_backoff_ms / 1000,
                backoff_max=settings.notify_backoff_max_s,
                timeout=settings.notify_timeout_s,
                sweep_every=settings.notify_sweep_s,
                digest_every=settings.digest_every_s,
                default_secret=settings.webhook_secret,
                keyring=keyring_from_settings(settings.secret_key, settings.secret_key_file),
                targets=TargetPolicy.from_setting(settings.webhook_allow_hosts),
            )
            supervisor.start("notifier", run.notifier.run)
        if projections:
            assert dsn is not None
            # one runner per stream read: status, history and audit from one read of the log,
            # each with its own checkpoint; the rejections from theirs
            run.runners = [
                Runner(group, dsn, nc, batch_size=settings.projection_batch)
                for group in groups(list(PROJECTIONS.values()))
            ]
            for r in run.runners:
                supervisor.start(f"projection-{r.checkpoint}", r.run)
        readiness.attach(
            nc=nc,
            broker=broker if query else None,
            supervisor=supervisor,
            dsn=dsn,
            runners=run.runners,
        )
        log.info(
            "services running",
            intake=intake,
            projections=projections,
            query=query,
            notifier=notifier,
        )
        yield run
    finally:
        closing.set()  # live streams end first
        shutdown.begin("the services are stopping")
        grace = max(min(3.0, shutdown.remaining(shutdown.reserve) * 0.4), 0.0)
        shutdown.abandoned += await supervisor.shutdown(grace, cancel_wait=1.0)
        await closer.aclose()


@contextlib.asynccontextmanager
async def intake(settings: Settings) -> AsyncIterator[Running]:
    async with running(settings, intake=True) as run:
        yield run


def demo_approvers(run: Running) -> dict[str, Principal]:
    """The demo gate's approvers: the live reader credentials of those names (`milestones dev`
    issues them); none known, the demo signs with stand-ins (``services.app.demo.signer``)."""
    from services.app.demo import APPROVERS

    known = run.auth.credentials() if run.auth is not None else []
    return {c.name: c.principal() for c in known if c.name in APPROVERS and c.role == "reader"}


async def load_demo(run: Running) -> None:
    """``milestones dev --demo``: the sample project, through the intake like any message.

    What an earlier start already appended is known by its receipt and not sent again
    (``services.app.demo.load``), so a restart with ``--demo`` appends nothing and logs no
    conflicts."""
    from services.app import demo

    assert run.intake is not None
    loaded = await demo.load(run.intake, today_utc(), demo_approvers(run))
    log.info(
        "demo project loaded",
        project=demo.PROJECT,
        sent=loaded.sent,
        already=loaded.already,
        refused=loaded.refused,
        dashboard=f"http://{run.settings.http_host}:{run.settings.http_port}/ui/projects/{demo.PROJECT}",
    )


async def run_services(
    settings: Settings,
    shutdown: Shutdown,
    *,
    intake: bool = True,
    projections: bool = False,
    query: bool = False,
    notifier: bool = False,
    http: bool = True,
    demo: bool = False,
    on_ready: Callable[[], object] | None = None,
) -> None:
    """The services until ``shutdown.stop``. The ops listener (``/health``, ``/ready``,
    ``/metrics`` on ``settings.ops_port``) starts first, so liveness answers during start-up.
    ``on_ready`` is called once the HTTP and ops listeners answer (``services.app.probe``).
    Traces are exported when the ``OTEL_*`` variables ask for it (``services.app.telemetry``)."""
    chosen = {"intake": intake, "projections": projections, "query": query, "notifier": notifier}
    kinds = [kind for kind, on in chosen.items() if on]
    telemetry = start_tracing(
        settings.traces, f"milestones-{kinds[0]}" if len(kinds) == 1 else "milestones"
    )
    try:
        await _run_services(
            settings,
            shutdown,
            telemetry,
            intake,
            projections,
            query,
            notifier,
            http,
            demo,
            on_ready,
        )
    finally:
        if telemetry is not None:  # what is left goes out, within the shutdown's bound
            await telemetry.stop(max(min(2.0, shutdown.remaining(shutdown.reserve)), 0.1))


async def _run_services(
    settings: Settings,
    shutdown: Shutdown,
    telemetry: Telemetry | None,
    intake: bool,
    projections: bool,
    query: bool,
    notifier: bool,
    http: bool,
    demo: bool,
    on_ready: Callable[[], object] | None = None,
) -> None:
    supervisor = Supervisor(shutdown.stop)
    readiness = Readiness(stall_after=settings.ready_stall_s)
    auth = LateAuthenticator()
    api = http and (intake or query)
    separate = settings.ops_port and not (
        api and (settings.ops_host, settings.ops_port) == (settings.http_host, settings.http_port)
    )
    if separate:
        supervisor.start("ops-http", ops_listener(settings, readiness, auth))
    async with running(
        settings,
        intake=intake,
        projections=projections,
        query=query,
        notifier=notifier,
        shutdown=shutdown,
        readiness=readiness,
        supervisor=supervisor,
    ) as run:
        auth.inner = run.auth
        if demo:
            await load_demo(run)
        shutdown.serving()
        listeners = [(settings.http_host, settings.http_port)] if api else []
        listeners += [(settings.ops_host, settings.ops_port)] if separate else []
        probe.when_answering(listeners, shutdown.stop, on_ready)
        if api:
            app = build_http_app(
                run.intake,
                max_body=settings.max_message_bytes * 4,
                extra_handlers=run.http_handlers,
                authenticator=run.auth or NOBODY,
            )
            if telemetry is not None:  # a server span per request (not for probes and scrapes)
                app = telemetry.instrument_asgi(app)
            try:
                sock = bind(settings.http_host, settings.http_port)
            except OSError as exc:  # e.g. the port is taken: one clear line, not a traceback
                raise StartupError(exc.strerror or str(exc)) from None
            base = f"http://{settings.http_host}:{settings.http_port}"
            log.info(
                "http listening",
                url=base,
                openapi=f"{base}/schema",
                events=f"{base}/events" if intake else None,
            )
            runtime.started()
            await serve_http(
                app, settings.http_host, settings.http_port, shutdown.stop, run.closing, sock=sock
            )
        else:
            runtime.started()
            log.info("listening", nats=settings.nats_url)
            await shutdown.stop.wait()
