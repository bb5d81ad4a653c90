"""The one wiring module: settings -> logging, NATS, streams, database, broker, runners, HTTP.

``running(settings, ...)`` assembles any mix of the four services in one process:
``milestones dev`` runs all of them; ``milestones serve <service>`` one (compose.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import nats
import structlog
import uvicorn
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS

from events.errors import StartupError
from projections import PROJECTIONS
from projections.db import create_pool, ensure_schema
from projections.runner import Runner
from projections.watch import CheckpointWatcher
from services.app.http import build_http_app
from services.app.settings import Settings
from services.dashboard.routes import dashboard_routes
from services.eventlog.log import EventLog
from services.eventlog.streams import (
    check_server_version,
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
from services.notify.notifier import Notifier
from services.notify.outbox import ensure_schema as ensure_notifier_schema
from services.query.http_routes import query_routes
from services.query.nats_handlers import register_queries
from services.query.queries import Queries, today_utc

log = structlog.get_logger("milestones")


async def connect_nats(url: str, name: str = "milestones") -> NATS:
    try:
        nc = await nats.connect(
            url.split(","),
            name=name,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
        )
    except Exception as exc:
        raise StartupError(
            f"cannot reach NATS at {url}: {exc!r} (is nats-server running?)"
        ) from exc
    check_server_version(nc)
    return nc


async def prepare_streams(nc: NATS, settings: Settings) -> None:
    for config in (
        events_stream_config(settings.stream_replicas),
        inbox_stream_config(settings.stream_replicas),
        rejections_stream_config(settings.stream_replicas),
    ):
        await ensure_stream(nc, config)


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
    http_handlers: list = field(default_factory=list)


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    intake: bool = True,
    projections: bool = False,
    query: bool = False,
    notifier: bool = False,
) -> AsyncIterator[Running]:
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect_nats(settings.nats_url, "milestones")
        stack.push_async_callback(nc.drain)
        await prepare_streams(nc, settings)
        broker = NatsBroker(settings.nats_url.split(","), logger=None, graceful_timeout=10)
        run = Running(settings, nc, broker)
        if projections or query or notifier:
            dsn = require_database(settings)
            await ensure_schema(dsn, list(PROJECTIONS.values()))
        if intake:
            run.committer = Committer(EventLog(nc), max_attempts=settings.append_attempts)
            await run.committer.start()
            stack.push_async_callback(run.committer.stop)
            run.intake = IntakeService(
                nc, run.committer, Limits(settings.max_message_bytes, settings.max_batch_events)
            )
            commands = CommandServer(nc, run.intake, workers=settings.command_workers)
            await commands.start()
            stack.push_async_callback(commands.stop)
        if query or notifier:
            pool = await create_pool(dsn, min_size=2, max_size=16)
            stack.push_async_callback(pool.close)
            async with pool.acquire() as conn:
                await ensure_notifier_schema(conn)
            watcher = CheckpointWatcher(dsn)
            await watcher.start()
            stack.push_async_callback(watcher.stop)
        if query:
            run.queries = Queries(pool, watcher, EventLog(nc), at_risk_gap=settings.at_risk_gap)
            register_queries(broker, run.queries)
            run.http_handlers = [
                *query_routes(run.queries),
                *dashboard_routes(run.queries, run.closing),
            ]
        await broker.start()
        stack.push_async_callback(broker.stop)
        stop = asyncio.Event()
        tasks: list[asyncio.Task] = []
        if run.intake is not None:
            inbox = InboxConsumer(nc, run.intake, batch=settings.inbox_batch)
            tasks.append(asyncio.create_task(inbox.run(stop), name="inbox"))
            if settings.scheduler:
                tasks.append(asyncio.create_task(Scheduler(nc).run(stop), name="scheduler"))
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
            )
            tasks.append(asyncio.create_task(run.notifier.run(stop), name="notifier"))
        if projections:
            run.runners = [
                Runner(p, dsn, nc, batch_size=settings.projection_batch)
                for p in PROJECTIONS.values()
            ]
            tasks += [
                asyncio.create_task(r.run(stop), name=f"projection-{r.projection.name}")
                for r in run.runners
            ]

        async def stop_tasks() -> None:
            stop.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("task failed", error=repr(result))

        stack.push_async_callback(stop_tasks)
        log.info(
            "services running",
            intake=intake,
            projections=projections,
            query=query,
            notifier=notifier,
        )
        yield run


@contextlib.asynccontextmanager
async def intake(settings: Settings) -> AsyncIterator[Running]:
    async with running(settings, intake=True) as run:
        yield run


class _Uvicorn(uvicorn.Server):
    """Signals belong to the CLI, which stops every service together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(
    app, host: str, port: int, stop: asyncio.Event, closing: asyncio.Event | None = None
) -> None:
    # open dashboards hold a server-sent event stream: shutdown gives them 3 s, then closes them
    server = _Uvicorn(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
    )
    task = asyncio.create_task(server.serve())
    await stop.wait()
    if closing is not None:
        closing.set()  # live streams (/ui/live) end now: the graceful shutdown waits for none
    server.should_exit = True
    await task


async def load_demo(run: Running) -> None:
    """``milestones dev --demo``: the sample project, through the intake like any message."""
    from services.app.demo import PROJECT, demo_events

    assert run.intake is not None
    refused = 0
    for body in demo_events(today_utc()):
        reply = await run.intake.handle(body, "demo")
        refused += not reply.accepted
        if reply.error is not None:
            log.warning("demo event refused", code=reply.error.code, reason=reply.error.message)
    log.info(
        "demo project loaded",
        project=PROJECT,
        refused=refused,
        dashboard=f"http://{run.settings.http_host}:{run.settings.http_port}/ui/projects/{PROJECT}",
    )


async def run_services(
    settings: Settings,
    stop: asyncio.Event,
    *,
    intake: bool = True,
    projections: bool = False,
    query: bool = False,
    notifier: bool = False,
    http: bool = True,
    demo: bool = False,
) -> None:
    async with running(
        settings, intake=intake, projections=projections, query=query, notifier=notifier
    ) as run:
        if demo:
            await load_demo(run)
        if http and (intake or query):
            app = build_http_app(
                run.intake,
                max_body=settings.max_message_bytes * 4,
                extra_handlers=run.http_handlers,
            )
            base = f"http://{settings.http_host}:{settings.http_port}"
            log.info(
                "http listening",
                url=base,
                openapi=f"{base}/schema",
                events=f"{base}/events" if intake else None,
            )
            await serve_http(app, settings.http_host, settings.http_port, stop, run.closing)
        else:
            log.info("listening", nats=settings.nats_url)
            await stop.wait()
