"""`milestones dev` and `milestones serve`: the long-running commands, run under
``services.app.supervise.run`` (SIGTERM/SIGINT stop them within MILESTONES_SHUTDOWN_TIMEOUT_S
whatever hangs, README "Operations")."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from services.app.settings import Settings
from services.app.supervise import Shutdown

if TYPE_CHECKING:
    from services.app.reaper import Reaper


# -- dev / serve ------------------------------------------------------------------------------
# Both run under services.app.supervise.run: SIGTERM/SIGINT stop them within
# MILESTONES_SHUTDOWN_TIMEOUT_S whatever hangs (README "Operations").
async def dev(args: argparse.Namespace, settings: Settings, shutdown: Shutdown) -> int:
    """One data directory, one dev (``dev.lock``, taken before any server is touched); a reaper
    stops the servers should dev die without stopping them (``services.app.reaper``)."""
    from services.app.devlock import DevLock
    from services.app.reaper import Reaper

    data_dir = Path(settings.data_dir).resolve()
    lock = await DevLock.acquire(data_dir)  # held: a StartupError of one line, exit code 2
    try:
        reaper = Reaper.start(lock.fd, settings.log_format, settings.log_level)
        try:
            return await _dev(args, settings, shutdown, data_dir, reaper, lock.started_at)
        finally:
            reaper.close()
    finally:
        lock.release()


def _ports(args: argparse.Namespace, settings: Settings, data_dir: Path) -> tuple[int, int, int]:
    """A flag (or a setting), else the port the last dev on this data dir had, else the
    default; any free port when those are taken."""
    from services.app import dev as devsetup

    earlier = devsetup.earlier_dev_file(data_dir)
    before = earlier.ports if earlier is not None else {}
    default = Settings()
    explicit_http = args.http_port or (
        settings.http_port if settings.http_port != default.http_port else None
    )
    explicit_ops = args.ops_port
    if explicit_ops is None and settings.ops_port != default.ops_port:
        explicit_ops = settings.ops_port
    chosen: set[int] = set()
    nats_port = devsetup.choose_port(
        "nats", [args.nats_port] if args.nats_port else [before.get("nats"), 4222], avoid=chosen
    )
    chosen.add(nats_port)
    http_port = devsetup.choose_port(
        "http",
        [explicit_http] if explicit_http else [before.get("http"), settings.http_port],
        settings.http_host,
        chosen,
    )
    chosen.add(http_port)
    ops_port = 0
    if explicit_ops != 0:  # 0: /ready and /metrics on the HTTP API's port only
        ops_port = devsetup.choose_port(
            "ops",
            [explicit_ops] if explicit_ops else [before.get("ops"), settings.ops_port],
            settings.ops_host,
            chosen,
        )
    return nats_port, http_port, ops_port


async def _dev(
    args: argparse.Namespace,
    settings: Settings,
    shutdown: Shutdown,
    data_dir: Path,
    reaper: Reaper,
    started_at: str,
) -> int:
    from services.app import dev as devsetup
    from services.app import embedded, wiring

    log = wiring.log
    nats_port, http_port, ops_port = _ports(args, settings, data_dir)
    identity = devsetup.identity(data_dir)
    nats_server = embedded.EmbeddedNats(data_dir / "nats", nats_port, identity=identity)
    shutdown.on_force(nats_server.kill)  # a forced exit must not leave them behind
    pg = None
    if not (args.database_url or settings.database_url):
        pg = embedded.EmbeddedPostgres(data_dir / "pg")
        pgdata = pg.pgdata
        shutdown.on_force(lambda: devsetup.kill_postgres(pgdata))
    starting: list[asyncio.Task] = []
    try:
        await devsetup.start_in_thread(
            starting, lambda: devsetup.start_nats(nats_server, reaper), "nats"
        )
        database_url = args.database_url or settings.database_url
        if pg is not None:
            embedded_pg = pg
            await devsetup.start_in_thread(
                starting, lambda: devsetup.start_postgres(embedded_pg, reaper), "postgres"
            )
            database_url = pg.url
        settings = devsetup.dev_settings(
            settings,
            data_dir,
            identity,
            nats_url=nats_server.url,
            http_port=http_port,
            ops_port=ops_port,
            database_url=database_url,
        )
        endpoints = devsetup.endpoints(settings, data_dir, started_at)
        dev_file = await devsetup.ensure_dev_credentials(
            settings, data_dir, endpoints, feed_project=_demo_project() if args.demo else None
        )

        def ready() -> None:  # once HTTP and ops answer; dev.json is written by then
            log.info(
                "milestones dev ready",
                nats=endpoints["nats_url"],
                http=endpoints["http_url"],
                dashboard=endpoints["dashboard_url"],
                ready=endpoints["ready_url"],
                database=endpoints["database_url"],
                data_dir=str(data_dir),
                dev_file=str(dev_file),
                pid=endpoints["pid"],
                stop="Ctrl-C",
            )

        shutdown.reserve = 4.0  # kept back for stopping the embedded servers afterwards
        await wiring.run_services(
            settings,
            shutdown,
            intake=True,
            projections=True,
            query=True,
            notifier=True,
            demo=args.demo,
            on_ready=ready,
        )
        return 0
    finally:
        shutdown.reserve = shutdown.RESERVE
        try:
            if unfinished := [f for f in starting if not f.done()]:
                await asyncio.wait(unfinished, timeout=max(shutdown.remaining(2.5), 0.05))
            await devsetup.stop_embedded(shutdown, nats_server, pg)
            reaper.forget_stopped()  # what is still running, the reaper stops
        finally:
            _stopped(log, shutdown)


def _demo_project() -> str:
    from services.app.demo import PROJECT

    return PROJECT


async def serve(args: argparse.Namespace, settings: Settings, shutdown: Shutdown) -> int:
    from services.app import wiring

    if args.ops_port is not None:
        settings = msgspec.structs.replace(settings, ops_port=args.ops_port)
    try:
        await wiring.run_services(
            settings,
            shutdown,
            intake=args.service == "intake",
            projections=args.service == "projections",
            query=args.service == "query",
            notifier=args.service == "notifier",
            http=not args.no_http,
        )
    finally:
        _stopped(wiring.log, shutdown)
    return 0


def _stopped(log, shutdown: Shutdown) -> None:
    if shutdown.signal is None:  # a start-up error says so itself
        return
    if shutdown.abandoned:
        log.warning("stopped; some steps ran out of time", abandoned=shutdown.abandoned)
    else:
        log.info("stopped cleanly", signal=shutdown.signal)
