"""Blue/green rebuild and replay of parked events.

A rebuild replays the stream from position 1 into fresh tables in a schema of their own while
the live runner keeps the old tables current and queries keep reading them. When it has caught
up, one transaction locks the live checkpoint row (the live runner waits at its next batch),
applies what is left, moves the old tables out and the new ones in (ALTER TABLE … SET SCHEMA)
and sets the checkpoint. Queries see either the old tables or the new ones, never a mix.
"""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client as NATS

from projections import db
from projections.base import Projection
from projections.runner import Runner
from services.store import StartupError

log = structlog.get_logger("milestones.rebuild")
S = db.SCHEMA


async def rebuild(projection: Projection, dsn: str, nc: NATS, *, batch_size: int = 2000) -> int:
    """Rebuild ``projection`` from position 1 and swap it in; returns the new checkpoint."""
    name = projection.name
    shadow, trash, ck = f"{S}_next_{name}", f"{S}_old_{name}", f"{name}@rebuild"
    conn = await db.connect(dsn, f"{shadow}, {S}")
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", db.lock_key(ck)):
            raise StartupError(f"a rebuild of {name} is already running")
        await conn.execute(f"DROP SCHEMA IF EXISTS {shadow} CASCADE; CREATE SCHEMA {shadow}")
        await conn.execute(projection.schema_sql)  # lands in the first schema on the path: the shadow
        await conn.execute(f"DELETE FROM {S}.checkpoints WHERE projection = $1", ck)
        await conn.execute(f"DELETE FROM {S}.parked_events WHERE projection = $1", ck)
        runner = Runner(projection, dsn, nc, schema=shadow, checkpoint=ck, batch_size=batch_size)
        never = asyncio.Event()
        await runner.consume(conn, never, catch_up=True)
        log.info("rebuild caught up, swapping", projection=name, position=runner.position)
        async with conn.transaction():
            live = await conn.fetchval(f"SELECT position FROM {S}.checkpoints WHERE projection = $1 FOR UPDATE", name)
            if runner.position < (live or 0):
                await runner.consume(conn, never, catch_up=True)
            await conn.execute(f"DROP SCHEMA IF EXISTS {trash} CASCADE; CREATE SCHEMA {trash}")
            for table in projection.tables:
                await conn.execute(f"ALTER TABLE {S}.{table} SET SCHEMA {trash}")
                await conn.execute(f"ALTER TABLE {shadow}.{table} SET SCHEMA {S}")
            await conn.execute(
                f"INSERT INTO {S}.checkpoints (projection, position) VALUES ($1, $2) "
                "ON CONFLICT (projection) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
                name, runner.position)
            await conn.execute(f"DELETE FROM {S}.parked_events WHERE projection = $1", name)
            await conn.execute(f"UPDATE {S}.parked_events SET projection = $1 WHERE projection = $2", name, ck)
            await conn.execute(f"DELETE FROM {S}.checkpoints WHERE projection = $1", ck)
            await conn.execute("SELECT pg_notify($1, $2)", db.NOTIFY_CHANNEL, f"{name}:{runner.position}")
        await conn.execute(f"DROP SCHEMA IF EXISTS {trash} CASCADE; DROP SCHEMA IF EXISTS {shadow} CASCADE")
        log.info("rebuild swapped in", projection=name, position=runner.position)
        return runner.position
    finally:
        await conn.close()


async def replay_parked(projection: Projection, dsn: str, nc: NATS) -> tuple[int, int]:
    """Apply parked events again, oldest first. Returns (applied, still parked)."""
    name = projection.name
    js = nc.jetstream()
    conn = await db.connect(dsn)
    applied = 0
    try:
        parked = await conn.fetch(f"SELECT position FROM {S}.parked_events WHERE projection = $1 ORDER BY position", name)
        for row in parked:
            msg = await js.get_msg(projection.stream, seq=row["position"], direct=True)
            async with conn.transaction():
                await conn.fetchval(f"SELECT position FROM {S}.checkpoints WHERE projection = $1 FOR UPDATE", name)
                try:
                    async with conn.transaction():
                        await projection.apply(conn, [(row["position"], projection.decode(msg.data))], S)
                except Exception as exc:
                    await db.park(conn, name, row["position"], msg.subject, None, f"{type(exc).__name__}: {exc}", msg.data)
                    log.warning("still parked", projection=name, position=row["position"], error=str(exc))
                    continue
                await conn.execute(f"DELETE FROM {S}.parked_events WHERE projection = $1 AND position = $2",
                                   name, row["position"])
                applied += 1
        remaining = await conn.fetchval(f"SELECT count(*) FROM {S}.parked_events WHERE projection = $1", name)
        return applied, remaining
    finally:
        await conn.close()
