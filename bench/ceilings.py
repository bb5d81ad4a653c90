"""The ceilings of the request paths as built: the same clients, the same load, the same server
stack, and a process that answers with a fixed body instead of the service (``bench.echo``).

NATS request/reply: ``intake_commands`` (the same publisher connection and credential, the same
concurrency, the same bodies) against ``python -m bench.echo nats``. On a secured server the
publisher can only publish to ``milestones.commands.*``, which the server maps into the
services' account as ``milestones.commands.<slot>.<Type>``; the services' identity, which the
responder uses, is the only one that can hear it there, as the intake does. So the responder
runs on the same server, with the same accounts, mapping and reply import as the intake's
requests cross, but only once the intake has been stopped: subscribed together, the two would
share the requests (one queue group) or both answer them (two). The benchmark therefore measures
it last, after the rebuilds, when nothing else in the run needs the intake; every reply is
checked to be the responder's.

HTTP: ``http_load`` (the query scenario's client, rate and duration, 16 keep-alive connections)
against ``python -m bench.echo http``, then a short closed loop for the most the two reach.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from bench.cpu import CpuMeter
from bench.echo import HTTP_PATH
from bench.http import Connection
from bench.scenarios import http_closed_loop, http_load, intake_commands
from bench.stack import Stack, ready, until

NATS_ECHO = "echo-nats"
HTTP_ECHO = "echo-http"


async def nats_echo(
    stack: Stack,
    services: NATS,
    publisher: NATS,
    projects: list[str],
    publishers: int,
    meter: CpuMeter,
) -> dict:
    """``intake_commands`` against the echo responder, with every process's CPU per message
    and the responder's alone; no intake may be subscribed on ``stack``'s server."""
    echo = stack.start(NATS_ECHO, "nats", module="bench.echo")
    try:
        await ready(stack, services)  # the services' probe on milestones.commands.*: answered
        async with meter.window() as cpu:
            figures = await intake_commands(publisher, projects, publishers)
        stack.check_alive()
    finally:
        echo.stop()
        del stack.services[NATS_ECHO]
    if figures["last_position"] != 1 or figures["refused"]:  # the echo's reply names position 1
        raise RuntimeError(f"replies other than the echo's came back: {figures}")
    figures["cpu_ms_per_message"] = {
        "messages": figures["messages"],
        **cpu.per_message(figures["messages"]),
    }
    figures["responder_cpu_ms_per_message"] = figures["cpu_ms_per_message"].get(NATS_ECHO)
    return figures


async def http_echo(stack: Stack, rate: int, seconds: float, meter: CpuMeter) -> dict:
    """``GET /echo`` at ``rate`` for ``seconds`` (open loop), then for up to 2 s as fast as 16
    connections go (``max``)."""
    echo = stack.start(HTTP_ECHO, "http", module="bench.echo")
    try:
        conn = Connection("127.0.0.1", stack.http_port)

        async def answers() -> bool:
            try:
                return (await conn.get(HTTP_PATH))[0] == 200
            except (OSError, asyncio.IncompleteReadError):
                await conn.close()
                return False

        try:
            await until(answers, 60, "the HTTP echo", stack)
        finally:
            await conn.close()
        warmed: dict = {}
        async with meter.window() as cpu:
            figures = await http_load(stack.http_port, HTTP_PATH, rate, seconds, warm_up=warmed)
        figures["warm_up"] = warmed
        asked = figures["n"] + warmed["requests"]  # the warm-up ran in the window too
        figures["cpu_ms_per_message"] = {"messages": asked, **cpu.per_message(asked)}
        figures["server_cpu_ms_per_request"] = figures["cpu_ms_per_message"].get(HTTP_ECHO)
        figures["max"] = await http_closed_loop(stack.http_port, HTTP_PATH, min(seconds, 2.0))
        stack.check_alive()
    finally:
        echo.stop()
        del stack.services[HTTP_ECHO]
    return figures
