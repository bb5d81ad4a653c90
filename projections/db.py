"""PostgreSQL plumbing shared by runners and queries: schema, codecs, checkpoints, parked events."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from events.errors import StartupError
from projections.base import Projection

SCHEMA = "milestones"
SCHEMA_VERSION = "2"  # 2: status keeps facts (health judged at query time), status reports
NOTIFY_CHANNEL = "milestones_checkpoint"

# A connection of its own (``connect``) or one acquired from a pool (``create_pool``).
Conn = asyncpg.Connection | PoolConnectionProxy

RUNNER_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.checkpoints (
    projection text PRIMARY KEY,
    position   bigint NOT NULL DEFAULT 0,
    pending    bigint NOT NULL DEFAULT 0,
    rate       double precision NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.parked_events (
    projection text NOT NULL,
    position   bigint NOT NULL,
    subject    text NOT NULL,
    type       text,
    error      text NOT NULL,
    payload    text NOT NULL,
    attempts   integer NOT NULL DEFAULT 1,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
"""

_JSON = msgspec.json.Encoder()


def _encode_jsonb(value: object) -> bytes:
    body = value if isinstance(value, bytes | bytearray) else _JSON.encode(value)
    return b"\x01" + body  # jsonb binary format: version 1, then the text


def _decode_jsonb(data: bytes) -> object:
    return msgspec.json.decode(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


async def connect(dsn: str, search_path: str = SCHEMA) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": search_path, "application_name": "milestones"}
    )
    await init_connection(conn)
    return conn


async def create_pool(dsn: str, *, min_size: int = 10, max_size: int = 10) -> asyncpg.Pool:
    """A pool of ``connect``'s connections (asyncpg's default sizes unless given)."""
    return await asyncpg.create_pool(
        dsn,
        init=init_connection,
        server_settings={"search_path": SCHEMA, "application_name": "milestones"},
        min_size=min_size,
        max_size=max_size,
    )


def lock_key(name: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"milestones:{name}".encode(), digest_size=8).digest(), "big", signed=True
    )


async def ensure_schema(dsn: str, projections: Sequence[Projection[Any]]) -> None:
    """Create what is missing; refuse (one line) a database made by an incompatible version."""
    try:
        conn = await connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"cannot reach PostgreSQL at {dsn}: {exc}") from exc
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("schema"))
            await conn.execute(RUNNER_SQL)
            found = await conn.fetchval(
                f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'"
            )
            if found is not None and found != SCHEMA_VERSION:
                raise StartupError(
                    f"database schema {SCHEMA} is version {found}, "
                    f"this build needs {SCHEMA_VERSION}: "
                    "drop the read-model schema and let it rebuild from the event log"
                )
            for projection in projections:
                await conn.execute(projection.schema_sql)
                await conn.execute(
                    f"INSERT INTO {SCHEMA}.checkpoints (projection) VALUES ($1) "
                    "ON CONFLICT DO NOTHING",
                    projection.name,
                )
            await conn.execute(
                f"INSERT INTO {SCHEMA}.meta VALUES ('schema_version', $1) ON CONFLICT DO NOTHING",
                SCHEMA_VERSION,
            )
    finally:
        await conn.close()


async def park(
    conn: asyncpg.Connection,
    projection: str,
    position: int,
    subject: str,
    type_: str | None,
    error: str,
    payload: bytes,
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.parked_events (projection, position, subject, type, error, payload) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (projection, position) DO UPDATE "
        "SET error = EXCLUDED.error, attempts = parked_events.attempts + 1, parked_at = now()",
        projection,
        position,
        subject,
        type_,
        error[:2000],
        payload.decode(errors="replace"),
    )
