"""The one wiring module: settings -> logging, NATS connection, streams, broker, HTTP, tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import structlog
import uvicorn
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS

from services.committer import Committer
from services.config import Settings
from services.http_app import build_http_app
from services.intake import Limits
from services.intake_service import IntakeService
from services.nats_app import register_intake
from services.store import (
    EventLog,
    StartupError,
    check_server_version,
    ensure_stream,
    events_stream_config,
    inbox_stream_config,
    rejections_stream_config,
)

log = structlog.get_logger("milestones")


async def connect_nats(url: str, name: str = "milestones") -> NATS:
    try:
        nc = await nats.connect(url.split(","), name=name, connect_timeout=5, max_reconnect_attempts=-1,
                                allow_reconnect=True)
    except Exception as exc:
        raise StartupError(f"cannot reach NATS at {url}: {exc!r} (is nats-server running?)") from exc
    check_server_version(nc)
    return nc


async def prepare_streams(nc: NATS, settings: Settings) -> None:
    for config in (
        events_stream_config(settings.stream_replicas),
        inbox_stream_config(settings.stream_replicas),
        rejections_stream_config(settings.stream_replicas),
    ):
        await ensure_stream(nc, config)


class _Uvicorn(uvicorn.Server):
    """Signals belong to the CLI, which stops every service together."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


@dataclass
class Intake:
    nc: NATS
    committer: Committer
    service: IntakeService
    broker: NatsBroker


@contextlib.asynccontextmanager
async def intake(settings: Settings) -> AsyncIterator[Intake]:
    """The write side: streams checked, the committer running, FastStream subscribed."""
    nc = await connect_nats(settings.nats_url, "milestones-intake")
    try:
        await prepare_streams(nc, settings)
        committer = Committer(EventLog(nc), max_attempts=settings.append_attempts)
        await committer.start()
        service = IntakeService(nc, committer, Limits(settings.max_message_bytes, settings.max_batch_events))
        broker = NatsBroker(settings.nats_url.split(","), logger=None, graceful_timeout=10)
        register_intake(broker, service, workers=settings.command_workers, inbox_batch=settings.inbox_batch)
        await broker.start()
        log.info("intake listening", commands="milestones.commands.<Type>", inbox="milestones.inbox.<Type>")
        try:
            yield Intake(nc, committer, service, broker)
        finally:
            await broker.stop()
            await committer.stop()
    finally:
        await nc.drain()


async def serve_http(app, host: str, port: int, stop: asyncio.Event) -> None:
    server = _Uvicorn(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                     lifespan="on"))
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


async def run_intake(settings: Settings, stop: asyncio.Event, *, with_http: bool = True) -> None:
    async with intake(settings) as running:
        if with_http:
            app = build_http_app(running.service, max_body=settings.max_message_bytes * 4)
            log.info("http listening", url=f"http://{settings.http_host}:{settings.http_port}",
                     openapi=f"http://{settings.http_host}:{settings.http_port}/schema")
            await serve_http(app, settings.http_host, settings.http_port, stop)
        else:
            await stop.wait()
