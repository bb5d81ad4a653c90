"""The benchmark's scenarios: intake through commands and the inbox, freshness, queries over
HTTP, the rebuild in a process of its own, and the synthetic top-up of the stream."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import random
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS

from bench import raw
from bench.http import Connection
from bench.stack import Stack, until
from bench.workload import project_messages, reschedule, synthetic_history
from events import REPLY_DECODER
from events.subjects import ALL_EVENTS, EVENTS_STREAM, INBOX_STREAM, command_subject, inbox_subject
from services.eventlog.log import EventLog, OutgoingMessage


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(seconds, 50) * 1000, 2),
        "p99_ms": round(pct(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2) if seconds else float("nan"),
        "n": len(seconds),
    }


async def open_loop(
    rate: float, total: int, start: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start ``total`` requests at a steady ``rate`` whether or not earlier ones have answered
    (open loop: a slow answer does not slow the offered load); returns the achieved rate."""
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    await asyncio.gather(*tasks)
    return total / (time.perf_counter() - started)


async def intake_commands(nc: NATS, projects: list[str], publishers: int) -> dict:
    """Each publisher takes projects from a queue and sends their messages in order, awaiting
    every reply: ``publishers`` messages are in flight at any time, across many milestones."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in projects:
        queue.put_nowait(p)
    latencies: list[float] = []
    refused: dict[str, int] = {}
    last = 0

    async def publisher() -> None:
        nonlocal last
        while not queue.empty():
            project = queue.get_nowait()
            for type_, body in project_messages(project):
                t0 = time.perf_counter()
                reply = REPLY_DECODER.decode(
                    (await nc.request(command_subject(type_), body, timeout=60)).data
                )
                latencies.append(time.perf_counter() - t0)
                if not reply.accepted:
                    assert reply.error is not None  # a refusal always says why
                    refused[reply.error.code] = refused.get(reply.error.code, 0) + 1
                elif reply.events:
                    last = max(last, reply.events[-1].position)

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(publishers)))
    elapsed = time.perf_counter() - started
    return {
        "messages": len(latencies),
        "seconds": round(elapsed, 2),
        "per_s": round(len(latencies) / elapsed),
        "refused": refused,
        "last_position": last,
        **ms(latencies),
    }


async def intake_inbox(publisher: NATS, services: NATS, projects: list[str]) -> dict:
    """Fire-and-forget through ``milestones.inbox.*`` (JetStream-acked publishes), timed until the
    intake has consumed and acked everything (which only the services' identity may look at)."""
    js = publisher.jetstream(publish_async_max_pending=4000)
    bodies = [(t, b) for p in projects for t, b in project_messages(p)]
    started = time.perf_counter()
    futures = [await js.publish_async(inbox_subject(t), b) for t, b in bodies]
    await asyncio.gather(*futures)
    published = time.perf_counter() - started
    inbox = services.jetstream()

    async def drained() -> bool:
        info = await inbox.consumer_info(INBOX_STREAM, "milestones-intake")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await until(drained, 600, "the inbox to drain")
    elapsed = time.perf_counter() - started
    return {
        "messages": len(bodies),
        "seconds": round(elapsed, 2),
        "per_s": round(len(bodies) / elapsed),
        "publish_s": round(published, 2),
    }


async def projections_caught_up(
    dsn: str, position: int, names: tuple[str, ...] = ("status", "history", "audit")
):
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT projection, position FROM milestones.checkpoints WHERE projection = ANY($1)",
            list(names),
        )
        return len(rows) == len(names) and all(r["position"] >= position for r in rows)
    finally:
        await conn.close()


async def freshness(
    nc: NATS, dsn: str, projects: list[str], rate: int, seconds: float, first: int = 0
) -> dict:
    """Reschedules of open milestones at a steady rate; for each, the time from the append's
    acknowledgement (the reply) to the status checkpoint passing its position (NOTIFY).
    ``first``: the number of the first reschedule (a later run starts past an earlier one's)."""
    acked: dict[int, float] = {}
    visible_at: list[tuple[int, float]] = []
    listener = await asyncpg.connect(dsn)

    def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
        name, _, pos = str(payload).partition(":")
        if name == "status":
            visible_at.append((int(pos), time.perf_counter()))

    await listener.add_listener("milestones_checkpoint", on_notify)
    targets = [(p, f"m{m}") for p in projects for m in range(5, 10)]
    total = int(rate * seconds)
    failures = 0

    async def send(i: int) -> None:
        nonlocal failures
        project, milestone = targets[i % len(targets)]
        msg = await nc.request(
            command_subject("MilestoneRescheduled"),
            reschedule(project, milestone, first + i),
            timeout=30,
        )
        reply = REPLY_DECODER.decode(msg.data)
        if reply.accepted and reply.events:
            acked[reply.events[-1].position] = time.perf_counter()
        else:
            failures += 1

    try:  # the listener is closed however the run ends (cancelled by a failed query run, too)
        achieved = await open_loop(rate, total, send)
        last = max(acked) if acked else 0
        await until(
            lambda: _seen(visible_at, last), 60, "the status model to pass the last reschedule"
        )
    finally:
        await listener.close()
    # checkpoints only grow, so the first notification at or past a position is found by bisection
    seen_positions = [p for p, _ in visible_at]
    lags = [
        max(0.0, visible_at[bisect.bisect_left(seen_positions, position)][1] - t_ack)
        for position, t_ack in acked.items()
    ]
    return {"rate_per_s": round(achieved), "refused": failures, **ms(lags)}


async def _seen(visible_at: list[tuple[int, float]], position: int) -> bool:
    return any(p >= position for p, _ in visible_at)


async def queries(
    port: int,
    projects: list[str],
    rate: int,
    seconds: float,
    tokens: dict[str, str],
    connections: int = 16,
    warm_up: dict | None = None,
    only: tuple[str, ...] = (),
) -> dict:
    """Open-loop GETs at a steady rate over keep-alive connections, each with the bearer token
    of the least role the route needs (checked on every request); latency per request.
    ``tokens``: role -> token, empty where nothing checks them. Every connection asks each kind
    first, untimed (``_warm_up``: what it saw goes into ``warm_up``). ``only``: these kinds
    (all when empty)."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection("127.0.0.1", port))
    rng = random.Random(7)
    kinds: dict[str, tuple[str, Callable[[], str]]] = {
        "milestone_by_id": (
            "reader",
            lambda: f"/milestones/m{rng.randrange(10)}?project_id={rng.choice(projects)}",
        ),
        "project_milestones": ("reader", lambda: f"/projects/{rng.choice(projects)}/milestones"),
        "audit_page": (
            "auditor",  # the audit trail is for auditors
            lambda: f"/audit?project_id={rng.choice(projects)}&limit=50",
        ),
    }
    if only:
        kinds = {name: kinds[name] for name in only}
    warmed = await _warm_up(pool, [(path, tokens.get(role)) for role, path in kinds.values()])
    if warm_up is not None:
        warm_up.update(warmed)
    out = {
        name: await _query_kind(pool, path, tokens.get(role), rate, seconds)
        for name, (role, path) in kinds.items()
    }
    while not pool.empty():
        await pool.get_nowait().close()
    return out


async def queries_while_the_intake_runs(
    nc: NATS,
    dsn: str,
    port: int,
    projects: list[str],
    tokens: dict[str, str],
    query_rate: int,
    seconds: float,
    reschedule_rate: int,
    first: int,
) -> dict:
    """Milestone by id at ``query_rate`` for ``seconds`` while reschedules go through the intake
    at ``reschedule_rate`` (the issue's "while the intake runs"), each timed as it is alone.
    The reschedules start first and go on for a second past the queries' end (the queries'
    warm-up comes first, a fraction of a second), so every timed query meets the load.
    ``first``: the number of the first reschedule, past the freshness run's."""
    load = asyncio.ensure_future(
        freshness(nc, dsn, projects, reschedule_rate, seconds + 1.0, first=first)
    )
    try:
        asked = await queries(
            port, projects, query_rate, seconds, tokens, only=("milestone_by_id",)
        )
    except BaseException:
        load.cancel()  # the reschedules end with the failed query run, their listener closed
        with contextlib.suppress(BaseException):
            await load
        raise
    return {"milestone_by_id": asked["milestone_by_id"], "freshness": await load}


async def _timed_get(
    conn: Connection, path: str, token: str | None, latencies: list[float]
) -> bool:
    """One GET on ``conn``, its latency appended to ``latencies``; False on an error (a status
    other than 200, or the connection lost: it is closed, and opened again by the next GET)."""
    t0 = time.perf_counter()
    try:
        status, _ = await conn.get(path, token)
        ok = status == 200
    except (OSError, asyncio.IncompleteReadError):
        ok = False
        await conn.close()
    latencies.append(time.perf_counter() - t0)
    return ok


async def _warm_up(
    pool: asyncio.Queue[Connection],
    requests: list[tuple[Callable[[], str], str | None]],
    rounds: int = 2,
) -> dict:
    """Each of ``requests`` (a path, a token) on every connection of ``pool`` at once, ``rounds``
    times, before anything is timed: the latencies then are of a steady state, as a load tool's
    warm-up gives them. The first requests pay for the TCP connection, the query service's first
    use of each statement on each of its database connections, and the interpreter's caches. In
    a run of 2026-12-07 without it, 7 of the first kind's 25 slowest requests (its p99) were
    among its first 9. Returns what the warm-up saw, so that it is shown, not hidden."""
    conns = [pool.get_nowait() for _ in range(pool.qsize())]
    latencies: list[float] = []
    errors = 0

    async def one(conn: Connection, path: str, token: str | None) -> None:
        nonlocal errors
        errors += not await _timed_get(conn, path, token, latencies)

    try:
        for _ in range(rounds):
            for path, token in requests:
                await asyncio.gather(*(one(c, path(), token) for c in conns))
    finally:
        for conn in conns:
            pool.put_nowait(conn)
    return {"requests": len(latencies), "errors": errors, **ms(latencies)}


async def _query_kind(
    pool: asyncio.Queue[Connection],
    path: Callable[[], str],
    token: str | None,
    rate: int,
    seconds: float,
) -> dict:
    """One kind of query at ``rate`` for ``seconds``: achieved rate, errors and latencies."""
    latencies: list[float] = []
    errors = 0

    async def one(p: str) -> None:
        nonlocal errors
        conn = await pool.get()
        errors += not await _timed_get(conn, p, token, latencies)
        pool.put_nowait(conn)

    achieved = await open_loop(rate, int(rate * seconds), lambda _i: one(path()))
    return {"rate_per_s": round(achieved), "errors": errors, **ms(latencies)}


async def http_load(
    port: int,
    path: str,
    rate: int,
    seconds: float,
    connections: int = 16,
    warm_up: dict | None = None,
) -> dict:
    """One path at ``rate`` for ``seconds``, open loop over ``connections`` keep-alive
    connections: the load ``queries`` puts on each kind of query, warmed up alike."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection("127.0.0.1", port))
    try:
        warmed = await _warm_up(pool, [(lambda: path, None)])
        if warm_up is not None:
            warm_up.update(warmed)
        return await _query_kind(pool, lambda: path, None, rate, seconds)
    finally:
        while not pool.empty():
            await pool.get_nowait().close()


async def http_closed_loop(port: int, path: str, seconds: float, connections: int = 16) -> dict:
    """Requests/s with one request always in flight on each of ``connections`` keep-alive
    connections (the next sent as soon as the last is answered): the most this client and the
    server reach together."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal errors
        conn = Connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, _ = await conn.get(path)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "connections": connections,
        "per_s": round(len(latencies) / elapsed),
        "errors": errors,
        **ms(latencies),
    }


async def top_up(nc: NATS, events: int) -> int:
    """Append synthetic projects' events (decided by the pure core, no receipts) until the stream
    holds ``events`` events; returns how many were appended."""
    log = EventLog(nc, timeout=30)
    have, _, _ = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
    appended, n = 0, 0
    batch: list[OutgoingMessage] = []
    while have + appended + len(batch) < events:
        for subject, data in synthetic_history(f"synthetic{n}"):
            batch.append(OutgoingMessage(subject, data))
            if len(batch) == 1000:
                await log.append(batch)
                appended += len(batch)
                batch = []
        n += 1
    if batch:
        await log.append(batch)
        appended += len(batch)
    return appended


async def rebuild_subprocess(stack: Stack, names: list[str], events: int) -> dict:
    """``python -m bench.rebuild_one`` rebuilds ``names`` together and reports its time and its
    own peak RSS."""
    peaks: dict[str, float] = {}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.rebuild_one",
        *names,
        env=stack.env(),
        stdout=asyncio.subprocess.PIPE,
    )

    async def sample() -> None:  # the services' peak while the rebuild runs
        while proc.returncode is None:
            for s in stack.services.values():
                peaks[s.name] = max(peaks.get(s.name, 0.0), s.peak_rss_mb())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    out, _ = await proc.communicate()
    await sampler
    if proc.returncode != 0:
        raise RuntimeError(f"rebuild of {names} failed ({proc.returncode})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "events": events,
        "seconds": result["seconds"],
        "per_s": round(events / result["seconds"]),
        "rebuild_rss_mb": result["peak_rss_mb"],
        "rebuild_cpu_s": result["cpu_s"],
        "services_rss_mb": peaks,
    }
