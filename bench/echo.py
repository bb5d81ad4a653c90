"""The ceilings' stand-ins for a service process: ``python -m bench.echo nats|http``.

Each runs as a process of its own, started by the benchmark with a service's environment
(``bench.stack.Stack.start``), so its CPU is its own and the load comes through the same
clients as the real path's. Both do nothing per message but answer with a fixed body: what is
left is the transport, the client library and the server stack, which is each path's ceiling.

``nats``: the intake's transport. A plain nats-py queue subscription on
``milestones.commands.>`` with the services' identity, a task per request, at most
``MILESTONES_COMMAND_WORKERS`` in flight (the subscription's pending buffer holds the rest), the
reply published on the request's reply subject without the request's headers: the shape of
``services.intake.commands.CommandServer`` without the decision and the append. The reply is a
fixed, valid ``Reply`` (accepted, one event), about the size of a real one, so the benchmark's
publishers decode it as they decode the intake's. It must run while no intake is subscribed
(the two would share or duplicate the requests): the benchmark stops the intake first
(``bench.ceilings``).

``http``: the query service's server stack. uvicorn on a socket bound by
``services.app.serving.bind`` and served by ``serve_http``, as the query service is, with a
Litestar app of one route, ``GET /echo``, answering a fixed JSON body. No credential check, no
OpenAPI, no database: those are the query's own cost.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from litestar import Litestar, MediaType, Response, get
from nats.aio.msg import Msg

from events import ENCODER
from events.envelope import EventRef, Reply
from events.subjects import ALL_COMMANDS
from services.app import logs, runtime
from services.app.serving import bind, serve_http
from services.app.settings import Settings

ECHO_QUEUE = "milestones-bench-echo"
NATS_REPLY = ENCODER.encode(
    Reply.ok([EventRef("TaskCompleted", "5f0c1d2e-8a41-5b7c-9d3e-2f6a7b8c9d0e", 1)])
)
HTTP_PATH = "/echo"
HTTP_BODY = (
    b'{"data":{"project_id":"p1","milestone_id":"m1","name":"Milestone 1",'
    b'"due":"2026-12-01","progress":40,"health":"on_track","tasks":{"t1":true,"t2":false}}}'
)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def nats_echo(settings: Settings) -> None:
    stop = _stop_on_signals()
    nc = await nats.connect(
        settings.nats_url,
        name="milestones-bench-echo",
        user=settings.nats_user,
        password=settings.nats_password,
    )
    slots = asyncio.Semaphore(settings.command_workers)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        if msg.reply:
            await nc.publish(msg.reply, NATS_REPLY)

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()

    async def on_message(msg: Msg) -> None:
        await slots.acquire()
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(done)

    sub = await nc.subscribe(
        ALL_COMMANDS,
        queue=ECHO_QUEUE,
        cb=on_message,
        pending_msgs_limit=1_000_000,
        pending_bytes_limit=1 << 30,
    )
    await stop.wait()
    await sub.unsubscribe()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    await nc.close()


@get(HTTP_PATH, media_type=MediaType.JSON)
async def echo() -> Response[bytes]:
    return Response(HTTP_BODY, media_type=MediaType.JSON)


async def http_echo(settings: Settings) -> None:
    stop = _stop_on_signals()
    app = Litestar(route_handlers=[echo], openapi_config=None, logging_config=None)
    sock = bind(settings.http_host, settings.http_port)
    await serve_http(app, settings.http_host, settings.http_port, stop, sock=sock)


def main(argv: list[str]) -> None:
    settings = Settings.from_env()
    runtime.tune()  # as the services it stands beside (services.cli.main)
    logs.configure("json", "warning")
    kinds = {"nats": nats_echo, "http": http_echo}
    if len(argv) != 1 or argv[0] not in kinds:
        raise SystemExit(f"usage: python -m bench.echo {'|'.join(kinds)}")
    runtime.started()
    asyncio.run(kinds[argv[0]](settings))


if __name__ == "__main__":
    main(sys.argv[1:])
