"""``milestones bench``: intake throughput, rebuild rate, freshness, query latency and memory,
side by side with the raw limits and each path's ceiling measured in the same run, the CPU each
process spends per message, and the cost of authentication.

The services run as their own processes (``milestones serve intake|projections|query``), as in
a deployment, so their memory is their own and the load generator is a separate client. The
servers are started here unless URLs are given: a nats-server with ``sync_interval: always``
(the durable default) and one with JetStream's lazy default (2 minutes) for the comparison,
both secured as in production (``bench.stack``), and PostgreSQL from ``--database-url`` (a
fresh database is created on it) or an embedded one. After them, the authentication A/B
(``bench.auth_ab``) runs on servers of its own.

Ceilings (``results["ceilings"]`` and ``results["raw"]``), each built from the clients the real
path uses: a NATS request/reply echo for the intake and an HTTP echo for the queries, each in a
process of its own (``bench.ceilings``, ``bench.echo``); the ordered read with the runner's
per-message decode for the rebuilds; binary ``COPY`` beside the upsert (``bench.raw``). CPU per
message of every process, scenario by scenario: ``results["cpu_ms_per_message"]``
(``bench.cpu``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import ceilings, critical_path, raw
from bench.auth_ab import auth_ab
from bench.auth_ab import rows as auth_ab_rows
from bench.cpu import CpuMeter, PostgresBackends, Window
from bench.cpu import row as cpu_row
from bench.scenarios import (
    freshness,
    intake_commands,
    intake_inbox,
    projections_caught_up,
    queries,
    queries_while_the_intake_runs,
    rebuild_subprocess,
    top_up,
)
from bench.stack import NatsTarget, Stack, clients, ready, until
from events.subjects import ALL_EVENTS, EVENTS_STREAM
from projections.base import decode_event
from services.app import runtime
from services.app.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.auth.identity import ServiceIdentity

PAYLOAD = (
    b'{"specversion":"1.0","id":"5f0c1d2e-8a41-5b7c-9d3e-2f6a7b8c9d0e","source":"bench","type":"TaskCompleted",'
    b'"subject":"milestones.events.p1.m1","time":"2026-11-24T10:00:00Z","recordedtime":"2026-11-24T10:00:00.1Z",'
    b'"correlationid":"c1","causationid":"c1","data":{"type":"TaskCompleted","project_id":"p1",'
    b'"milestone_id":"m1","task_id":"t1","completed_at":"2026-11-24T10:00:00Z"}}'
)


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
    auth_runs: int = 5  # pairs of the authentication A/B; 0 skips it
    auth_projects: int = 200  # projects per A/B run
    # the services' login to ``nats_url`` (ignored for the servers started here, which get a
    # generated identity); with an accounts file, publishers get credentials of their own
    nats_identity: ServiceIdentity | None = None
    nats_auth_file: str | None = None

    def as_json(self) -> dict:
        """The options as the results record them: never the identity's passwords."""
        out = {k: v for k, v in vars(self).items() if k != "nats_identity"}
        out["nats_identity"] = self.nats_identity is not None
        return out


# -- orchestration ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def servers(
    opts: Options, work: Path, identity: ServiceIdentity
) -> AsyncIterator[tuple[NatsTarget, NatsTarget | None, str, str]]:
    """(durable NATS, lazy NATS or None, database url, database url for the lazy run)."""
    started: list = []
    try:
        lazy: NatsTarget | None = None
        if opts.nats_url:
            durable = NatsTarget(
                opts.nats_url,
                opts.nats_identity,
                opts.nats_auth_file if opts.nats_identity else None,
            )
        else:
            for name, sync in (("nats-durable", "always"), ("nats-lazy", "2m")):
                server = EmbeddedNats(work / name, sync_interval=sync, identity=identity)
                started.append(await asyncio.to_thread(server.start))
            durable, lazy = NatsTarget.embedded(started[0]), NatsTarget.embedded(started[1])
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


async def raw_limits(opts: Options, durable: NatsTarget, lazy: NatsTarget | None) -> dict:
    limits: dict = {}
    for label, target in (("durable", durable), ("lazy", lazy)):
        if target is None:
            continue
        nc = await target.services()  # a stream of its own: only the services may create one
        try:
            limits[f"atomic_batch_{label}"] = round(
                await raw.atomic_batches(nc, PAYLOAD, opts.raw_messages, 1000, 2)
            )
            limits[f"publish_async_{label}"] = round(
                await raw.publish_async(nc, PAYLOAD, opts.raw_messages // 5)
            )
            await nc.jetstream().delete_stream(raw.RAW_STREAM)
        finally:
            await nc.close()
    return limits


async def durable_run(
    opts: Options,
    target: NatsTarget,
    dsn: str,
    work: Path,
    results: dict,
    report: Callable[[str], None],
) -> None:
    """Intake, freshness, queries and rebuilds against the durable server, services and load
    each with their own identity; the echo ceilings beside them, and every process's CPU per
    message in each."""
    limits = results["raw"]
    stack = Stack(target, dsn, free_port(), work)
    ceiling = Stack(target, None, free_port(), work / "ceilings")  # the echo processes
    ceiling.work.mkdir()
    cpu: dict[str, dict] = results.setdefault("cpu_ms_per_message", {})
    results.setdefault("ceilings", {})
    meter = CpuMeter(lambda: _processes(target, stack, ceiling), await PostgresBackends.find(dsn))
    nc = await target.services()
    load = None
    try:
        stack.start("intake", "serve", "intake", "--no-http")
        stack.start("projections", "serve", "projections")
        stack.start("query", "serve", "query")
        await ready(stack, nc)
        load = await clients(stack, nc, http_roles=("reader", "auditor"))
        projects = [f"p{i}" for i in range(opts.projects)]
        report(
            f"intake: {len(projects)} projects through milestones.commands.* "
            f"with {opts.publishers} publishers"
        )
        async with meter.window() as used:
            results["intake_commands"] = await intake_commands(
                load.publisher, projects, opts.publishers
            )
        cpu["intake_commands"] = _per_message(used, results["intake_commands"]["messages"])
        report(f"intake: {opts.inbox_projects} projects through milestones.inbox.*")
        async with meter.window() as used:
            results["intake_inbox"] = await intake_inbox(
                load.publisher, nc, [f"inbox{i}" for i in range(opts.inbox_projects)]
            )
        cpu["intake_inbox"] = _per_message(used, results["intake_inbox"]["messages"])
        _, _, last = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
        await until(lambda: projections_caught_up(dsn, last), 600, "projections to catch up", stack)
        report(f"freshness: reschedules at {opts.freshness_rate}/s for {opts.freshness_seconds}s")
        async with meter.window() as used:
            results["freshness"] = await freshness(
                load.publisher, dsn, projects, opts.freshness_rate, opts.freshness_seconds
            )
        cpu["freshness"] = _per_message(used, results["freshness"]["n"])
        report(f"query: {opts.query_rate} requests/s over HTTP")
        warmed: dict = {}
        async with meter.window() as used:
            results["query"] = await queries(
                stack.http_port,
                projects,
                opts.query_rate,
                opts.query_seconds,
                load.tokens,
                warm_up=warmed,
            )
        results["query_warm_up"] = warmed
        # the warm-up's requests ran in the window too
        asked = sum(q["n"] for q in results["query"].values()) + warmed["requests"]
        cpu["query"] = _per_message(used, asked)
        report(
            f"query: milestone by id at {opts.query_rate} requests/s while reschedules go "
            f"through the intake at {opts.freshness_rate}/s"
        )
        results["query_while_intake_runs"] = await queries_while_the_intake_runs(
            load.publisher,
            dsn,
            stack.http_port,
            projects,
            load.tokens,
            opts.query_rate,
            opts.query_seconds,
            opts.freshness_rate,
            first=int(opts.freshness_rate * opts.freshness_seconds),  # past the freshness run's
        )
        report(f"ceiling: HTTP echo (uvicorn + Litestar) at {opts.query_rate} requests/s")
        results["ceilings"]["http_echo"] = await ceilings.http_echo(
            ceiling, opts.query_rate, opts.query_seconds, meter
        )
        cpu["http_echo"] = results["ceilings"]["http_echo"]["cpu_ms_per_message"]
        if opts.events:
            report(f"rebuild: topping the stream up to {opts.events} events")
            results["top_up_appended"] = await top_up(nc, opts.events)
        _, _, last = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
        await until(lambda: projections_caught_up(dsn, last), 900, "projections to catch up", stack)
        # timed once the live projections are idle, as the rebuilds will be
        events, per_s, _ = await raw.ordered_read(nc, EVENTS_STREAM, ALL_EVENTS)
        limits["ordered_read"] = round(per_s)
        report("ceiling: the ordered read as the runner reads, without its decode")
        with runtime.replaying():  # as the rebuilds read (bench.rebuild_one)
            _, per_s = await raw.ordered_read_decoded(nc, EVENTS_STREAM, ALL_EVENTS, raw.undecoded)
        limits["ordered_read_runner"] = round(per_s)
        results["rebuild"] = {}
        # each rebuild's ceiling is read right before it and right after it (the read after one
        # is the read before the next): one read swung 28-53k events/s between runs of
        # 2026-12-06 and 29.7-46.3k minutes apart on 2026-12-07, so a ceiling from another
        # minute made ratios noise, and one read beside it still left them at the mercy of
        # the machine's mood during that read. The ceiling is the rate of the two reads' mean
        # time (their harmonic mean): the machine as it was on both sides of the rebuild
        decoded: list[float] = []

        async def decoded_read(name: str, when: str) -> float:
            report(f"ceiling: the ordered read with the runner's decode ({when} {name})")
            with runtime.replaying():  # the collector as the rebuild has it (bench.rebuild_one)
                _, per_s = await raw.ordered_read_decoded(
                    nc, EVENTS_STREAM, ALL_EVENTS, decode_event
                )
            decoded.append(per_s)
            return per_s

        rebuilds = (["status", "history", "audit"], ["status"], ["history"], ["audit"])
        before = await decoded_read("+".join(rebuilds[0]), "before")
        for names in rebuilds:
            name = "+".join(names)
            report(f"rebuild: {' + '.join(names)} from position 1 over {events} events")
            async with meter.window() as used:
                results["rebuild"][name] = await rebuild_subprocess(stack, names, events)
            after = await decoded_read(name, "after")
            results["rebuild"][name]["ceiling_before_per_s"] = round(before)
            results["rebuild"][name]["ceiling_after_per_s"] = round(after)
            results["rebuild"][name]["ceiling_per_s"] = round(2 / (1 / before + 1 / after))
            used.add("rebuild", results["rebuild"][name]["rebuild_cpu_s"])
            cpu[f"rebuild {name}"] = _per_message(used, events)
            before = after
        limits["ordered_read_decoded"] = round(statistics.median(decoded))
        results["services_peak_rss_mb"] = {s.name: s.peak_rss_mb() for s in stack.services.values()}
        # last: the echo answers the intake's subjects, so the intake must be gone
        report(
            f"ceiling: NATS request/reply echo, {len(projects)} projects' messages "
            f"with {opts.publishers} publishers (the intake stopped)"
        )
        stack.services.pop("intake").stop()
        results["ceilings"]["nats_echo"] = await ceilings.nats_echo(
            ceiling, nc, load.publisher, projects, opts.publishers, meter
        )
        cpu["nats_echo"] = results["ceilings"]["nats_echo"]["cpu_ms_per_message"]
    finally:
        if load is not None:
            await load.close()
        await nc.close()
        ceiling.stop()
        stack.stop()


def _processes(target: NatsTarget, *stacks: Stack) -> dict[str, int]:
    """The processes of the run alive now, by name: services, echoes, nats-server."""
    out = {
        name: s.proc.pid
        for stack in stacks
        for name, s in stack.services.items()
        if s.proc.poll() is None
    }
    if target.server is not None and target.server.proc is not None:
        out["nats-server"] = target.server.proc.pid
    return out


def _per_message(window: Window, messages: int) -> dict:
    return {"messages": messages, **window.per_message(messages)}


async def lazy_run(opts: Options, target: NatsTarget, dsn: str, work: Path) -> dict:
    """The same services and load as the durable run, so the two figures compare."""
    stack = Stack(target, dsn, free_port(), work)
    stack.work.mkdir()
    nc = await target.services()
    load = None
    try:
        stack.start("intake", "serve", "intake", "--no-http")
        stack.start("projections", "serve", "projections")
        await ready(stack, nc)
        load = await clients(stack, nc)
        return await intake_commands(
            load.publisher, [f"lazy{i}" for i in range(opts.projects)], opts.publishers
        )
    finally:
        if load is not None:
            await load.close()
        await nc.close()
        stack.stop()


async def run(opts: Options, report: Callable[[str], None]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="milestones-bench-"))
    identity = ServiceIdentity.generate()  # the services' login to every server started here
    results: dict = {"machine": machine(), "options": opts.as_json()}
    report("critical path: 10,000 milestones, 20,000 dependencies (pure, before any server)")
    results["critical_path"] = critical_path.measure()
    async with servers(opts, work, identity) as (durable, lazy, dsn, lazy_dsn):
        results["authentication"] = durable.secured
        report(
            "raw limits: JetStream atomic batch and publish_async (OCC header), "
            "asyncpg upsert and binary COPY"
        )
        results["raw"] = await raw_limits(opts, durable, lazy)
        results["raw"]["pg_upsert_rows"] = round(await raw.pg_upsert(dsn))
        results["raw"]["pg_copy_rows"] = round(await raw.pg_copy(dsn))
        await durable_run(opts, durable, dsn, work, results, report)
        if lazy and opts.lazy:
            report(
                "intake on JetStream's lazy default (sync_interval 2m), projections running, "
                "for comparison"
            )
            results["intake_commands_lazy"] = await lazy_run(opts, lazy, lazy_dsn, work / "lazy")
    if opts.auth_runs > 0:  # after the main run: nothing else runs meanwhile
        results["auth_ab"] = await auth_ab(
            opts.auth_runs, opts.auth_projects, opts.publishers, work, report, identity
        )
    results["ratios"] = ratios(results)
    Path(opts.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)  # kept when a run fails: the services' logs
    return results


SINGLE = ("status", "history", "audit")


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
        "inbox_vs_intake_commands": ratio(
            r["intake_inbox"]["per_s"], r["intake_commands"]["per_s"]
        ),
        "rebuild_all_vs_ordered_read": ratio(
            r["rebuild"]["status+history+audit"]["per_s"], raw_["ordered_read"]
        ),
    }
    for name in ("status", "history", "audit"):
        out[f"rebuild_{name}_vs_ordered_read"] = ratio(
            r["rebuild"][name]["per_s"], raw_["ordered_read"]
        )
    # the ceilings: each figure against the path as built with nothing of ours on it
    if "ordered_read_decoded" in raw_:
        decoded = raw_["ordered_read_decoded"]
        out["ordered_read_decoded_vs_ordered_read"] = ratio(decoded, raw_["ordered_read"])
        if "ordered_read_runner" in raw_:
            out["ordered_read_runner_vs_ordered_read"] = ratio(
                raw_["ordered_read_runner"], raw_["ordered_read"]
            )
        for name, label in (("status+history+audit", "all"), *((n, n) for n in SINGLE)):
            x = r["rebuild"][name]  # against its own ceiling, read just before it, if it has one
            out[f"rebuild_{label}_vs_ordered_read_decoded"] = ratio(
                x["per_s"], x.get("ceiling_per_s", decoded)
            )
    if "pg_copy_rows" in raw_:
        out["pg_upsert_vs_copy"] = ratio(raw_["pg_upsert_rows"], raw_["pg_copy_rows"])
    ceil = r.get("ceilings", {})
    if "nats_echo" in ceil:
        echo = ceil["nats_echo"]["per_s"]
        out["intake_vs_nats_echo"] = ratio(r["intake_commands"]["per_s"], echo)
        out["inbox_vs_nats_echo"] = ratio(r["intake_inbox"]["per_s"], echo)
        if "intake_commands_lazy" in r:
            out["intake_lazy_vs_nats_echo"] = ratio(r["intake_commands_lazy"]["per_s"], echo)
    if "http_echo" in ceil:  # latencies: how many times the echo's (1 is the ceiling)
        echo_http = ceil["http_echo"]
        for name, q in r["query"].items():
            out[f"query_{name}_p50_vs_http_echo"] = ratio(q["p50_ms"], echo_http["p50_ms"])
            out[f"query_{name}_p99_vs_http_echo"] = ratio(q["p99_ms"], echo_http["p99_ms"])
    if "auth_ab" in r:
        out["intake_secured_vs_unsecured"] = r["auth_ab"]["ratio"]
        out["intake_secured_vs_unsecured_cpu"] = r["auth_ab"]["path_cpu_ratio"]
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
    ceil = r.get("ceilings", {})
    rows = [("what", "figure", "ceiling / raw limit (same run)", "ratio")]
    rows.append(
        (
            "authentication (main run)",
            "on: publisher credential, reader and auditor tokens"
            if r.get("authentication")
            else "off: the NATS server has no accounts",
            "",
            "",
        )
    )
    rows += _intake_rows(r)
    if "auth_ab" in r:
        rows += auth_ab_rows(r["auth_ab"])
    rows += _rebuild_rows(r)
    f = r["freshness"]
    rows.append(
        (
            "freshness, ack → status visible",
            f"p50 {f['p50_ms']} ms  p99 {f['p99_ms']} ms at {f['rate_per_s']:,}/s",
            "",
            "",
        )
    )
    he = ceil.get("http_echo")
    if he is not None:
        rows.append(
            (
                "ceiling: HTTP echo (uvicorn + Litestar, own process)",
                f"p50 {he['p50_ms']} ms  p99 {he['p99_ms']} ms at {he['rate_per_s']}/s; "
                f"max {he['max']['per_s']:,}/s ({he['max']['connections']} connections)",
                f"server CPU {he['server_cpu_ms_per_request']} ms/request",
                f"{he['errors']} errors",
            )
        )
    for name, q in r["query"].items():
        key = f"query_{name}_p99_vs_http_echo"
        rows.append(
            (
                f"query {name} (HTTP)",
                f"p50 {q['p50_ms']} ms  p99 {q['p99_ms']} ms at {q['rate_per_s']}/s",
                f"echo p50 {he['p50_ms']} ms  p99 {he['p99_ms']} ms" if he else "",
                f"p99 {rt[key]:.1f}× echo, {q['errors']} errors"
                if key in rt
                else f"{q['errors']} errors",
            )
        )
    if (under := r.get("query_while_intake_runs")) is not None:
        q, f = under["milestone_by_id"], under["freshness"]
        rows.append(
            (
                "query milestone_by_id while the intake runs",
                f"p50 {q['p50_ms']} ms  p99 {q['p99_ms']} ms at {q['rate_per_s']}/s; "
                f"meanwhile reschedules at {f['rate_per_s']:,}/s, freshness p99 {f['p99_ms']} ms",
                f"echo p50 {he['p50_ms']} ms  p99 {he['p99_ms']} ms" if he else "",
                f"p99 {q['p99_ms'] / he['p99_ms']:.1f}× echo, {q['errors']} errors"
                if he and he["p99_ms"]
                else f"{q['errors']} errors",
            )
        )
    qw, ew = r.get("query_warm_up"), (he or {}).get("warm_up")
    if qw:  # untimed: every connection asks each kind twice before the timed runs
        echo_warm = f"; echo {ew['requests']} requests, max {ew['max_ms']} ms" if ew else ""
        rows.append(
            (
                "warm-up before the timed HTTP runs (untimed)",
                f"queries {qw['requests']} requests, max {qw['max_ms']} ms{echo_warm}",
                "",
                f"{qw['errors'] + (ew or {}).get('errors', 0)} errors",
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
    if "pg_copy_rows" in raw_:
        rows.append(
            (
                "asyncpg batched upsert",
                f"{raw_['pg_upsert_rows']:,} rows/s",
                f"binary COPY {raw_['pg_copy_rows']:,} rows/s",
                f"{rt['pg_upsert_vs_copy']:.0%}",
            )
        )
    else:
        rows.append(("asyncpg batched upsert", f"{raw_['pg_upsert_rows']:,} rows/s", "", ""))
    if "critical_path" in r:
        cp = r["critical_path"]
        rows.append(
            (
                f"critical path, {cp['milestones']:,} milestones / {cp['dependencies']:,} deps",
                f"{cp['median_ms']} ms median of {cp['runs']} (best {cp['best_ms']} ms)",
                "target 100 ms",
                f"{cp['median_ms'] / 100:.0%}",
            )
        )
    rows.append(
        (
            "peak RSS of services",
            ", ".join(f"{k} {v} MB" for k, v in r["services_peak_rss_mb"].items()),
            "",
            "",
        )
    )
    for scenario, figures in r.get("cpu_ms_per_message", {}).items():
        rows.append(cpu_row(scenario, figures))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _intake_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """The intake's lines: each beside the request/reply echo (when measured) and the atomic
    batch, and the echo itself."""
    raw_, rt = r["raw"], r["ratios"]
    ne = r.get("ceilings", {}).get("nats_echo")

    def limits(batch: int, echo_key: str, batch_key: str) -> tuple[str, str]:
        if ne is None or echo_key not in rt:
            return f"atomic batch {batch:,}/s", f"{rt.get(batch_key, 0):.0%}"
        return (
            f"echo {ne['per_s']:,}/s (atomic batch {batch:,}/s)",
            f"{rt[echo_key]:.0%} ({rt.get(batch_key, 0):.0%})",
        )

    rows = []
    if ne is not None:
        rows.append(
            (
                "ceiling: NATS request/reply echo (own process)",
                f"{ne['per_s']:,} msg/s  p50 {ne['p50_ms']} ms  p99 {ne['p99_ms']} ms",
                f"responder CPU {ne['responder_cpu_ms_per_message']} ms/msg",
                "",
            )
        )
    ic = r["intake_commands"]
    rows.append(
        (
            "intake, commands (request/reply)",
            f"{ic['per_s']:,} msg/s  p50 {ic['p50_ms']} ms  p99 {ic['p99_ms']} ms",
            *limits(
                raw_["atomic_batch_durable"],
                "intake_vs_nats_echo",
                "intake_vs_atomic_batch_durable",
            ),
        )
    )
    ib = r["intake_inbox"]
    rows.append(
        (
            "intake, inbox (JetStream)",
            f"{ib['per_s']:,} msg/s ({rt['inbox_vs_intake_commands']:.0%} of commands)",
            *limits(
                raw_["atomic_batch_durable"], "inbox_vs_nats_echo", "inbox_vs_atomic_batch_durable"
            ),
        )
    )
    if "intake_commands_lazy" in r:
        il = r["intake_commands_lazy"]
        rows.append(
            (
                "intake, commands, LAZY fsync (2m)",
                f"{il['per_s']:,} msg/s  p50 {il['p50_ms']} ms  p99 {il['p99_ms']} ms",
                *limits(
                    raw_.get("atomic_batch_lazy", 0),
                    "intake_lazy_vs_nats_echo",
                    "intake_lazy_vs_atomic_batch_lazy",
                ),
            )
        )
    return rows


def _rebuild_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """The rebuilds' lines, each against the ordered read with the runner's decode (and the
    plain read), after the two reads themselves."""
    raw_, rt = r["raw"], r["ratios"]
    decoded = raw_.get("ordered_read_decoded")
    rows = []
    if decoded is not None:
        alone = raw_.get("ordered_read_runner")
        rows.append(
            (
                "ceiling: ordered read + Item.of/decode_event",
                f"median {decoded:,} ev/s of the reads around the rebuilds"
                + (f" (the runner's read alone {alone:,}/s)" if alone else ""),
                f"plain ordered read {raw_['ordered_read']:,}/s",
                f"{rt['ordered_read_decoded_vs_ordered_read']:.0%}",
            )
        )
    for name, x in r["rebuild"].items():
        label = "all" if "+" in name else name
        plain = f"{rt[f'rebuild_{label}_vs_ordered_read']:.0%}"
        figure = f"{x['per_s']:,} ev/s ({x['events']:,} events, {x['rebuild_rss_mb']} MB peak RSS)"
        if decoded is None:
            rows.append(
                (f"rebuild {name}", figure, f"ordered read {raw_['ordered_read']:,}/s", plain)
            )
            continue
        rows.append(
            (
                f"rebuild {name}",
                figure,
                _around(x, decoded) + f" (plain {raw_['ordered_read']:,}/s)",
                f"{rt[f'rebuild_{label}_vs_ordered_read_decoded']:.0%} ({plain})",
            )
        )
    return rows


def _around(x: dict, decoded: int) -> str:
    """A rebuild's ceiling: the reads before and after it, or (older results) before only."""
    if "ceiling_after_per_s" in x:
        return (
            f"read+decode {x['ceiling_per_s']:,}/s around it "
            f"({x['ceiling_before_per_s']:,} before, {x['ceiling_after_per_s']:,} after)"
        )
    return f"read+decode {x.get('ceiling_per_s', decoded):,}/s just before"


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
