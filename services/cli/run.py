"""`milestones dev` and `milestones serve`: the long-running commands, run under
``services.app.supervise.run`` (SIGTERM/SIGINT stop them within MILESTONES_SHUTDOWN_TIMEOUT_S
whatever hangs, README "Operations")."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import msgspec

from services.app.settings import Settings
from services.app.supervise import Shutdown


# -- dev / serve ------------------------------------------------------------------------------
# Both run under services.app.supervise.run: SIGTERM/SIGINT stop them within
# MILESTONES_SHUTDOWN_TIMEOUT_S whatever hangs (README "Operations").
async def dev(args: argparse.Namespace, settings: Settings, shutdown: Shutdown) -> int:
    from services.app import dev as devsetup
    from services.app import embedded, wiring

    log = wiring.log
    data_dir = Path(settings.data_dir).resolve()
    nats_port = args.nats_port or 4222
    if not embedded.port_is_free(nats_port):
        taken, nats_port = nats_port, embedded.free_port()
        log.info("port taken, using a free one", service="nats", taken=taken, port=nats_port)
    http_port = args.http_port or settings.http_port
    if not embedded.port_is_free(http_port, settings.http_host):
        taken, http_port = http_port, embedded.free_port(settings.http_host)
        log.info("port taken, using a free one", service="http", taken=taken, port=http_port)
    ops_port = settings.ops_port if args.ops_port is None else args.ops_port
    if ops_port and not embedded.port_is_free(ops_port, settings.ops_host):
        taken, ops_port = ops_port, embedded.free_port(settings.ops_host)
        log.info("port taken, using a free one", service="ops", taken=taken, port=ops_port)

    identity = devsetup.identity(data_dir)
    nats_server = embedded.EmbeddedNats(data_dir / "nats", nats_port, identity=identity)
    shutdown.on_force(nats_server.kill)  # a forced exit must not leave them behind
    pg = None
    if not (args.database_url or settings.database_url):
        pg = embedded.EmbeddedPostgres(data_dir / "pg")
        pgdata = pg.pgdata
        shutdown.on_force(lambda: devsetup.kill_postgres(pgdata))
    # started in daemon threads and shielded: a stop during start-up waits (bounded) for a
    # server to be up before stopping it, so none is left running behind the process
    starting: list[asyncio.Future] = []
    try:
        starting.append(asyncio.ensure_future(devsetup.in_daemon_thread(nats_server.start, "nats")))
        await asyncio.shield(starting[-1])
        database_url = args.database_url or settings.database_url
        if pg is not None:
            starting.append(asyncio.ensure_future(devsetup.in_daemon_thread(pg.start, "postgres")))
            await asyncio.shield(starting[-1])
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
        http_url = f"http://{settings.http_host}:{http_port}"
        credentials = await devsetup.ensure_dev_credentials(settings, data_dir, http_url)
        log.info(
            "milestones dev ready",
            nats=settings.nats_url,
            http=http_url,
            dashboard=f"{http_url}/ui",
            ready=f"http://{settings.ops_host}:{ops_port}/ready" if ops_port else None,
            database=database_url,
            data_dir=str(data_dir),
            credentials=str(credentials),
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
        )
        return 0
    finally:
        shutdown.reserve = shutdown.RESERVE
        try:
            if unfinished := [f for f in starting if not f.done()]:
                await asyncio.wait(unfinished, timeout=max(shutdown.remaining(2.5), 0.05))
            await devsetup.stop_embedded(shutdown, nats_server, pg)
        finally:
            _stopped(log, shutdown)


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
