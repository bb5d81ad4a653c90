"""The raw limits, measured in the same run so every figure of Milestones reads as a ratio:
JetStream atomic-batch publish and ``publish_async``, both with the OCC header; the ordered
consumer read, plain and with the projection runner's per-message work; an asyncpg batched
upsert and binary ``COPY``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from projections import nats_headers
from projections.parking import Item
from projections.runner import take_batch
from services.eventlog.log import EventLog, OutgoingMessage

RAW_STREAM = "BENCH_RAW"
OCC = "Nats-Expected-Last-Subject-Sequence"


async def raw_stream(nc: NATS) -> None:
    js = nc.jetstream()
    try:
        await js.delete_stream(RAW_STREAM)
    except Exception:  # noqa: BLE001 - not there yet
        pass
    await js.add_stream(
        StreamConfig(
            name=RAW_STREAM,
            subjects=["bench.raw.>"],
            storage=StorageType.FILE,
            allow_atomic=True,
            allow_direct=True,
        )
    )


async def atomic_batches(
    nc: NATS, payload: bytes, total: int, batch: int = 500, in_flight: int = 4
) -> float:
    """Messages/s appended as atomic batches, every message on a fresh subject expecting last
    sequence 0 (the intake's receipts do exactly that), ``in_flight`` batches at a time."""
    await raw_stream(nc)
    log = EventLog(nc, timeout=30)
    batches = total // batch
    counter = iter(range(batches))
    run = time.perf_counter_ns()

    async def worker() -> None:
        for b in counter:
            await log.append(
                [OutgoingMessage(f"bench.raw.{run}.{b}.{i}", payload, 0) for i in range(batch)]
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return batches * batch / (time.perf_counter() - started)


async def publish_async(nc: NATS, payload: bytes, total: int) -> float:
    """Messages/s with nats-py's ``publish_async`` (pipelined, one ack per message), OCC header on
    each."""
    await raw_stream(nc)
    js = nc.jetstream(publish_async_max_pending=4000)
    run = time.perf_counter_ns()
    started = time.perf_counter()
    futures = [
        await js.publish_async(f"bench.raw.{run}.{i}", payload, headers={OCC: "0"})
        for i in range(total)
    ]
    acks = await asyncio.gather(*futures)
    assert all(a.seq for a in acks)
    return total / (time.perf_counter() - started)


async def ordered_read(nc: NATS, stream: str, subject: str) -> tuple[int, float, int]:
    """(messages, messages/s, last sequence) reading ``subject`` from the start with an ordered
    push consumer."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    if not info.state.messages:
        return 0, 0.0, 0
    done = asyncio.Event()
    count = last = 0

    async def on_message(msg) -> None:
        nonlocal count, last
        count += 1
        last = msg.metadata.sequence.stream
        if msg.metadata.num_pending == 0:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(
        subject,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return count, count / elapsed, last


async def ordered_read_decoded(
    nc: NATS, stream: str, subject: str, decode: Callable[[bytes], Any], batch: int = 2000
) -> tuple[int, float]:
    """(messages, messages/s) reading ``subject`` from the start as the projection runner reads
    before it writes anything (``projections.runner.Runner.consume`` and ``apply``): an ordered
    push consumer without a callback, the first message of a batch from ``next_msg`` and the
    rest of what nats-py has buffered (``projections.runner.take_batch``, up to ``batch``, flow
    control answered as the runner does), then ``Item.of`` for each message (its stream
    position from the metadata, its subject, body and headers, and ``decode`` of the body).
    The ceiling of a rebuild: everything but the rows; with the runner's header parse too
    (``projections.nats_headers``), so the ceiling is not lowered by what the runner avoids."""
    nats_headers.install()
    js = nc.jetstream()
    info = await js.stream_info(stream)
    if not info.state.messages:
        return 0, 0.0
    count = 0
    started = time.perf_counter()
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        idle_heartbeat=2.0,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        pending = 1
        while pending:
            msgs = await take_batch(nc, sub, await sub.next_msg(timeout=600), batch)
            items = [Item.of(m, decode) for m in msgs]  # an undecodable one is parked there
            count += len(items)
            pending = msgs[-1].metadata.num_pending
        elapsed = time.perf_counter() - started
    finally:
        await sub.unsubscribe()
    return count, count / elapsed


def undecoded(_body: bytes) -> None:
    """No decode: ``ordered_read_decoded`` with this measures the runner's read by itself."""
    return None


async def pg_upsert(dsn: str, rows: int = 200_000, batch: int = 2000) -> float:
    """Rows/s of ``INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE`` in batches, one
    transaction per batch: the shape of a projection write."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE bench_upsert (k text PRIMARY KEY, n integer NOT NULL, "
            "v jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        )
        sql = (
            "INSERT INTO bench_upsert (k, n, v) "
            "SELECT * FROM unnest($1::text[], $2::int[], $3::jsonb[]) "
            "ON CONFLICT (k) DO UPDATE SET n = EXCLUDED.n, v = EXCLUDED.v, at = now()"
        )
        value = '{"tasks": {"t1": true, "t2": false}, "health": "on_track"}'
        started = time.perf_counter()
        for b in range(rows // batch):
            keys = [
                f"k{(b * batch + i) % (rows // 2)}" for i in range(batch)
            ]  # half updates, half inserts
            async with conn.transaction():
                await conn.execute(sql, keys, list(range(batch)), [value] * batch)
        return rows // batch * batch / (time.perf_counter() - started)
    finally:
        await conn.close()


async def pg_copy(dsn: str, rows: int = 200_000, batch: int = 2000) -> float:
    """Rows/s of asyncpg's ``copy_records_to_table`` (binary ``COPY``) into a table of
    ``pg_upsert``'s shape with its primary key, ``batch`` rows per call, one transaction per
    batch, every key new (``COPY`` cannot update): how a rebuild could fill its shadow tables."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE bench_copy (k text PRIMARY KEY, n integer NOT NULL, "
            "v jsonb NOT NULL, at timestamptz NOT NULL)"
        )
        value = '{"tasks": {"t1": true, "t2": false}, "health": "on_track"}'
        at = datetime(2026, 11, 24, 10, tzinfo=UTC)
        started = time.perf_counter()
        for b in range(rows // batch):
            records = [(f"k{b * batch + i}", i, value, at) for i in range(batch)]
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "bench_copy", records=records, columns=["k", "n", "v", "at"]
                )
        return rows // batch * batch / (time.perf_counter() - started)
    finally:
        await conn.close()
