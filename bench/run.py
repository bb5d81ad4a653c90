"""``milestones bench``: intake throughput, rebuild rate, freshness, query latency and memory,
side by side with the raw limits measured in the same run.

The services run as their own processes (``milestones serve intake|projections|query``), as in
a deployment, so their memory is their own and the load generator is a separate client. The
servers are started here unless URLs are given: a nats-server with ``sync_interval: always``
(the durable default) and one with JetStream's lazy default (2 minutes) for the comparison,
and PostgreSQL from ``--database-url`` (a fresh database is created on it) or an embedded one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgspec
import nats
from nats.aio.client import Client as NATS

from bench import raw
from bench.http import Connection
from bench.workload import project_messages, reschedule, synthetic_history
from events import REPLY_DECODER
from events.subjects import (
    ALL_EVENTS,
    EVENTS_STREAM,
    INBOX_STREAM,
    command_subject,
    inbox_subject,
)
from services.app.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.eventlog.log import EventLog, OutgoingMessage

PAYLOAD = (
    b'{"specversion":"1.0","id":"5f0c1d2e-8a41-5b7c-9d3e-2f6a7b8c9d0e","source":"bench","type":"TaskCompleted",'
    b'"subject":"milestones.events.p1.m1","time":"2026-11-24T10:00:00Z","recordedtime":"2026-11-24T10:00:00.1Z",'
    b'"correlationid":"c1","causationid":"c1","data":{"type":"TaskCompleted","project_id":"p1",'
    b'"milestone_id":"m1","task_id":"t1","completed_at":"2026-11-24T10:00:00Z"}}'
)


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


@dataclass
class Options:
    projects: int = 2000
    inbox_projects: int = 200
    publishers: int = 256
    events: int = 0  # top the stream up to this many events for the rebuild scenario
    freshness_rate: int = 2000
    freshness_seconds: float = 10.0
    query_rate: int = 500
    query_seconds: float = 5.0
    raw_messages: int = 100_000
    nats_url: str | None = None
    database_url: str | None = None
    out: str = "bench-results.json"
    lazy: bool = True  # also measure the intake on JetStream's lazy fsync default


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def peak_rss_mb(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Stack:
    """Servers and service processes of one run."""

    nats_url: str
    database_url: str
    http_port: int
    work: Path
    services: dict[str, Service] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MILESTONES_NATS_URL": self.nats_url,
            "MILESTONES_DATABASE_URL": self.database_url,
            "MILESTONES_HTTP_PORT": str(self.http_port),
            "MILESTONES_LOG_FORMAT": "json",
            "MILESTONES_LOG_LEVEL": "warning",
        }

    def start(self, name: str, *args: str) -> Service:
        log = self.work / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.services[name] = Service(name, proc, log)
        return self.services[name]

    def check_alive(self) -> None:
        for s in self.services.values():
            if s.proc.poll() is not None:
                raise RuntimeError(
                    f"service {s.name} exited ({s.proc.returncode}): {s.log.read_text()[-2000:]}"
                )

    def stop(self) -> None:
        for s in reversed(list(self.services.values())):
            s.stop()


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, stack: Stack | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if stack:
            stack.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def open_loop(rate: float, total: int, start: Callable[[int], Awaitable[None]]) -> float:
    """Start ``total`` requests at a steady ``rate`` whether or not earlier ones have answered
    (open loop: a slow answer does not slow the offered load); returns the achieved rate."""
    tasks = []
    started = time.perf_counter()
    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    await asyncio.gather(*tasks)
    return total / (time.perf_counter() - started)


# -- scenarios ---------------------------------------------------------------------------------
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


async def intake_inbox(nc: NATS, projects: list[str]) -> dict:
    """Fire-and-forget through ``milestones.inbox.*`` (JetStream-acked publishes), timed until the
    intake has consumed and acked everything."""
    js = nc.jetstream(publish_async_max_pending=4000)
    bodies = [(t, b) for p in projects for t, b in project_messages(p)]
    started = time.perf_counter()
    futures = [await js.publish_async(inbox_subject(t), b) for t, b in bodies]
    await asyncio.gather(*futures)
    published = time.perf_counter() - started

    async def drained() -> bool:
        info = await js.consumer_info(INBOX_STREAM, "milestones-intake")
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


async def freshness(nc: NATS, dsn: str, projects: list[str], rate: int, seconds: float) -> dict:
    """Reschedules of open milestones at a steady rate; for each, the time from the append's
    acknowledgement (the reply) to the status checkpoint passing its position (NOTIFY)."""
    acked: dict[int, float] = {}
    visible_at: list[tuple[int, float]] = []
    listener = await asyncpg.connect(dsn)

    def on_notify(_c, _pid, _channel, payload: str) -> None:
        name, _, pos = payload.partition(":")
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
            reschedule(project, milestone, i),
            timeout=30,
        )
        reply = REPLY_DECODER.decode(msg.data)
        if reply.accepted and reply.events:
            acked[reply.events[-1].position] = time.perf_counter()
        else:
            failures += 1

    achieved = await open_loop(rate, total, send)
    last = max(acked) if acked else 0
    await until(lambda: _seen(visible_at, last), 60, "the status model to pass the last reschedule")
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
    port: int, projects: list[str], rate: int, seconds: float, connections: int = 16
) -> dict:
    """Open-loop GETs at a steady rate over keep-alive connections; latency per request."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection("127.0.0.1", port))
    rng = random.Random(7)
    kinds: dict[str, Callable[[], str]] = {
        "milestone_by_id": lambda: (
            f"/milestones/m{rng.randrange(10)}?project_id={rng.choice(projects)}"
        ),
        "project_milestones": lambda: f"/projects/{rng.choice(projects)}/milestones",
        "audit_page": lambda: f"/audit?project_id={rng.choice(projects)}&limit=50",
    }
    out = {name: await _query_kind(pool, path, rate, seconds) for name, path in kinds.items()}
    while not pool.empty():
        await pool.get_nowait().close()
    return out


async def _query_kind(
    pool: asyncio.Queue[Connection], path: Callable[[], str], rate: int, seconds: float
) -> dict:
    """One kind of query at ``rate`` for ``seconds``: achieved rate, errors and latencies."""
    latencies: list[float] = []
    errors = 0

    async def one(p: str) -> None:
        nonlocal errors
        conn = await pool.get()
        t0 = time.perf_counter()
        try:
            status, _ = await conn.get(p)
            errors += status != 200
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            await conn.close()
        latencies.append(time.perf_counter() - t0)
        pool.put_nowait(conn)

    achieved = await open_loop(rate, int(rate * seconds), lambda _i: one(path()))
    return {"rate_per_s": round(achieved), "errors": errors, **ms(latencies)}


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
        "services_rss_mb": peaks,
    }


# -- orchestration ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def servers(opts: Options, work: Path) -> AsyncIterator[tuple[str, str | None, str, str]]:
    """(durable NATS url, lazy NATS url or None, database url, database url for the lazy run)."""
    started: list = []
    try:
        if opts.nats_url:
            durable, lazy = opts.nats_url, None
        else:
            durable = started.append(EmbeddedNats(work / "nats-durable").start()) or started[-1].url
            lazy = (
                started.append(EmbeddedNats(work / "nats-lazy", sync_interval="2m").start())
                or started[-1].url
            )
        base = opts.database_url
        if not base:
            started.append(EmbeddedPostgres(work / "pg" / "data", delete_on_stop=True).start())
            base = started[-1].url
        names = [f"milestones_bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
        admin = await asyncpg.connect(base)
        for name in names:
            await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        try:
            yield durable, lazy, _with_database(base, names[0]), _with_database(base, names[1])
        finally:
            admin = await asyncpg.connect(base)
            for name in names:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.close()
    finally:
        for s in reversed(started):
            s.stop()


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def ready(stack: Stack, nc: NATS) -> None:
    async def intake_answers() -> bool:
        try:
            await nc.request(command_subject("ProjectCreated"), b"{}", timeout=0.5)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    async def query_answers() -> bool:
        conn = Connection("127.0.0.1", stack.http_port)
        try:
            return (await conn.get("/health"))[0] == 200
        except OSError:
            return False
        finally:
            await conn.close()

    await until(intake_answers, 60, "the intake", stack)
    if "query" in stack.services:
        await until(query_answers, 60, "the query service", stack)


async def run(opts: Options, report: Callable[[str], None]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="milestones-bench-"))
    results: dict = {
        "machine": machine(),
        "options": msgspec.to_builtins(msgspec.convert(vars(opts), dict)),
    }
    async with servers(opts, work) as (durable, lazy, dsn, lazy_dsn):
        # raw limits
        report(
            "raw limits: JetStream atomic batch and publish_async (OCC header), ordered read, "
            "asyncpg upsert"
        )
        limits: dict = {}
        for label, url in (("durable", durable), ("lazy", lazy)):
            if url is None:
                continue
            nc = await nats.connect(url)
            limits[f"atomic_batch_{label}"] = round(
                await raw.atomic_batches(nc, PAYLOAD, opts.raw_messages, 1000, 2)
            )
            limits[f"publish_async_{label}"] = round(
                await raw.publish_async(nc, PAYLOAD, opts.raw_messages // 5)
            )
            await nc.jetstream().delete_stream(raw.RAW_STREAM)
            await nc.close()
        limits["pg_upsert_rows"] = round(await raw.pg_upsert(dsn))
        results["raw"] = limits

        stack = Stack(durable, dsn, free_port(), work)
        nc = await nats.connect(durable)
        try:
            stack.start("intake", "serve", "intake", "--no-http")
            stack.start("projections", "serve", "projections")
            stack.start("query", "serve", "query")
            await ready(stack, nc)
            projects = [f"p{i}" for i in range(opts.projects)]
            report(
                f"intake: {len(projects)} projects through milestones.commands.* "
                f"with {opts.publishers} publishers"
            )
            results["intake_commands"] = await intake_commands(nc, projects, opts.publishers)
            report(f"intake: {opts.inbox_projects} projects through milestones.inbox.*")
            results["intake_inbox"] = await intake_inbox(
                nc, [f"inbox{i}" for i in range(opts.inbox_projects)]
            )
            _, _, last = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
            await until(
                lambda: projections_caught_up(dsn, last), 600, "projections to catch up", stack
            )
            report(
                f"freshness: reschedules at {opts.freshness_rate}/s for {opts.freshness_seconds}s"
            )
            results["freshness"] = await freshness(
                nc, dsn, projects, opts.freshness_rate, opts.freshness_seconds
            )
            report(f"query: {opts.query_rate} requests/s over HTTP")
            results["query"] = await queries(
                stack.http_port, projects, opts.query_rate, opts.query_seconds
            )
            if opts.events:
                report(f"rebuild: topping the stream up to {opts.events} events")
                results["top_up_appended"] = await top_up(nc, opts.events)
            _, _, last = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
            await until(
                lambda: projections_caught_up(dsn, last), 900, "projections to catch up", stack
            )
            # timed once the live projections are idle, as the rebuilds will be
            events, per_s, _ = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
            limits["ordered_read"] = round(per_s)
            results["rebuild"] = {}
            for names in (["status", "history", "audit"], ["status"], ["history"], ["audit"]):
                report(f"rebuild: {' + '.join(names)} from position 1 over {events} events")
                results["rebuild"]["+".join(names)] = await rebuild_subprocess(stack, names, events)
            results["services_peak_rss_mb"] = {
                s.name: s.peak_rss_mb() for s in stack.services.values()
            }
        finally:
            await nc.close()
            stack.stop()

        if lazy and opts.lazy:
            report(
                "intake on JetStream's lazy default (sync_interval 2m), projections running, "
                "for comparison"
            )
            lazy_stack = Stack(lazy, lazy_dsn, free_port(), work / "lazy")
            lazy_stack.work.mkdir()
            nc = await nats.connect(lazy)
            try:  # the same services as the durable run, so the two figures compare
                lazy_stack.start("intake", "serve", "intake", "--no-http")
                lazy_stack.start("projections", "serve", "projections")
                await ready(lazy_stack, nc)
                results["intake_commands_lazy"] = await intake_commands(
                    nc, [f"lazy{i}" for i in range(opts.projects)], opts.publishers
                )
            finally:
                await nc.close()
                lazy_stack.stop()
    results["ratios"] = ratios(results)
    Path(opts.out).write_text(json.dumps(results, indent=2))
    return results


def ratios(r: dict) -> dict:
    raw_ = r["raw"]

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    out = {
        "intake_vs_atomic_batch_durable": ratio(
            r["intake_commands"]["per_s"], raw_["atomic_batch_durable"]
        ),
        "inbox_vs_atomic_batch_durable": ratio(
            r["intake_inbox"]["per_s"], raw_["atomic_batch_durable"]
        ),
        "rebuild_all_vs_ordered_read": ratio(
            r["rebuild"]["status+history+audit"]["per_s"], raw_["ordered_read"]
        ),
    }
    for name in ("status", "history", "audit"):
        out[f"rebuild_{name}_vs_ordered_read"] = ratio(
            r["rebuild"][name]["per_s"], raw_["ordered_read"]
        )
    if "intake_commands_lazy" in r and "atomic_batch_lazy" in raw_:
        out["intake_lazy_vs_atomic_batch_lazy"] = ratio(
            r["intake_commands_lazy"]["per_s"], raw_["atomic_batch_lazy"]
        )
    return out


def machine() -> dict:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def table(r: dict) -> str:
    raw_, rt = r["raw"], r["ratios"]
    rows = [("what", "figure", "raw limit (same run)", "ratio")]
    ic = r["intake_commands"]
    rows.append(
        (
            "intake, commands (request/reply)",
            f"{ic['per_s']:,} msg/s  p50 {ic['p50_ms']} ms  p99 {ic['p99_ms']} ms",
            f"atomic batch {raw_['atomic_batch_durable']:,}/s",
            f"{rt['intake_vs_atomic_batch_durable']:.0%}",
        )
    )
    ib = r["intake_inbox"]
    rows.append(
        (
            "intake, inbox (JetStream)",
            f"{ib['per_s']:,} msg/s",
            f"atomic batch {raw_['atomic_batch_durable']:,}/s",
            f"{rt['inbox_vs_atomic_batch_durable']:.0%}",
        )
    )
    if "intake_commands_lazy" in r:
        il = r["intake_commands_lazy"]
        rows.append(
            (
                "intake, commands, LAZY fsync (2m)",
                f"{il['per_s']:,} msg/s  p50 {il['p50_ms']} ms  p99 {il['p99_ms']} ms",
                f"atomic batch {raw_.get('atomic_batch_lazy', 0):,}/s",
                f"{rt.get('intake_lazy_vs_atomic_batch_lazy', 0):.0%}",
            )
        )
    for name, x in r["rebuild"].items():
        key = "rebuild_all_vs_ordered_read" if "+" in name else f"rebuild_{name}_vs_ordered_read"
        rows.append(
            (
                f"rebuild {name}",
                f"{x['per_s']:,} ev/s ({x['events']:,} events, {x['rebuild_rss_mb']} MB peak RSS)",
                f"ordered read {raw_['ordered_read']:,}/s",
                f"{rt[key]:.0%}",
            )
        )
    f = r["freshness"]
    rows.append(
        (
            "freshness, ack → status visible",
            f"p50 {f['p50_ms']} ms  p99 {f['p99_ms']} ms at {f['rate_per_s']:,}/s",
            "",
            "",
        )
    )
    for name, q in r["query"].items():
        rows.append(
            (
                f"query {name} (HTTP)",
                f"p50 {q['p50_ms']} ms  p99 {q['p99_ms']} ms at {q['rate_per_s']}/s",
                "",
                f"{q['errors']} errors",
            )
        )
    rows.append(
        (
            "publish_async, durable / lazy",
            f"{raw_['publish_async_durable']:,} / {raw_.get('publish_async_lazy', 0):,} msg/s",
            "",
            "",
        )
    )
    rows.append(("asyncpg batched upsert", f"{raw_['pg_upsert_rows']:,} rows/s", "", ""))
    rows.append(
        (
            "peak RSS of services",
            ", ".join(f"{k} {v} MB" for k, v in r["services_peak_rss_mb"].items()),
            "",
            "",
        )
    )
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(opts: Options) -> int:
    def report(line: str) -> None:
        sys.stderr.write(f"bench: {line}\n")
        sys.stderr.flush()

    started = time.monotonic()
    results = asyncio.run(run(opts, report))
    sys.stdout.write(table(results) + "\n")
    sys.stdout.write(
        f"\n{results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"{time.monotonic() - started:.0f} s; JSON in {opts.out}\n"
    )
    return 0
