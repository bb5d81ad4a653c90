"""PostgreSQL plumbing shared by runners and queries: schema, codecs, checkpoints, parked events."""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from events.errors import StartupError
from projections.base import Projection
from projections.storable import TIME_MAX, TIME_MIN, timestamp

SCHEMA = "milestones"
# 2: status keeps facts (health judged at query time), status reports
# 3: parked events keep the raw message (bytea) and its headers, with their project and what they
#    wait behind (the sequenced dead-letter); checkpoints count changes to the parked set
SCHEMA_VERSION = "4"
NOTIFY_CHANNEL = "milestones_checkpoint"
# The notifier's own tables (outbox, delivery log, digests: side effects, not rebuildable from the
# log) live in a schema of their own, versioned by services/notify/migrations, so that dropping
# SCHEMA to rebuild the read models leaves them alone. Connections look there after SCHEMA:
# unqualified notifier SQL finds them, and what a read model creates still lands in SCHEMA.
NOTIFY_SCHEMA = "milestones_notify"
SEARCH_PATH = f"{SCHEMA}, {NOTIFY_SCHEMA}"

# A connection of its own (``connect``) or one acquired from a pool (``create_pool``).
Conn = asyncpg.Connection | PoolConnectionProxy

META_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text NOT NULL);
"""
RUNNER_SQL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.checkpoints (
    projection text PRIMARY KEY,
    position   bigint NOT NULL DEFAULT 0,
    pending    bigint NOT NULL DEFAULT 0,
    rate       double precision NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- bumped by whoever changes the parked set besides the runner (replay, rebuild swap): the
    -- runner reads it with the row it locks each batch and reloads what it holds back
    parked_epoch bigint NOT NULL DEFAULT 0
);
-- The sequenced dead-letter: an event that could not be decoded, stored or applied, and every
-- later event of its project behind it (``behind``: the parked position it waits for).
CREATE TABLE IF NOT EXISTS {SCHEMA}.parked_events (
    projection text NOT NULL,
    position   bigint NOT NULL,
    subject    text NOT NULL,
    project    text,
    type       text,
    error      text NOT NULL,
    behind     bigint,
    payload    bytea NOT NULL,
    headers    bytea,
    attempts   integer NOT NULL DEFAULT 1,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
CREATE INDEX IF NOT EXISTS parked_events_project ON {SCHEMA}.parked_events
    (projection, project, position);
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


# ``timestamptz`` as asyncpg encodes it in binary (microseconds since 2000-01-01 UTC, with its
# two infinities), at once for what every projected time is: an aware ``datetime`` in UTC
# (``stored_time``, ``storable.timestamp``). asyncpg's own encoder compares each value with its
# naive infinities and makes a ``timedelta`` to read three attributes of: 0.6 us per value, two
# thirds of the CPU of an audit row's binary ``COPY`` (2.2 us for 16 columns, 0.8 without the
# two times; 2026-12-07). This one takes 0.25 us. A Python codec replaces the decoder too, so it
# is set on the projections' own connections only (``connect``: runners, rebuilds, replays),
# which write times by the hundred thousand and read few; the queries' pools keep asyncpg's.
# Other values (another time zone, a naive time, a date) take asyncpg's steps, written out.
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_INT64 = struct.Struct("!q")
_PG_INFINITY, _PG_NEGATIVE_INFINITY = 2**63 - 1, -(2**63)
# what asyncpg reads PostgreSQL's infinities as, and writes as them (naive; any time whose UTC
# instant is the same microsecond too)
_INFINITE, _NEGATIVE_INFINITE = dt.datetime.max, dt.datetime.min
_INFINITE_US = (_INFINITE.replace(tzinfo=dt.UTC) - _PG_EPOCH) // _MICROSECOND
_NEGATIVE_INFINITE_US = (_NEGATIVE_INFINITE.replace(tzinfo=dt.UTC) - _PG_EPOCH) // _MICROSECOND


def _encode_timestamptz(value: dt.datetime | dt.date) -> bytes:
    if type(value) is dt.datetime and value.tzinfo is dt.UTC:
        us = (value - _PG_EPOCH) // _MICROSECOND
    else:
        us = _asyncpg_microseconds(value)
    if us == _INFINITE_US:
        us = _PG_INFINITY
    elif us == _NEGATIVE_INFINITE_US:
        us = _PG_NEGATIVE_INFINITY
    return _INT64.pack(us)


def _asyncpg_microseconds(value: object) -> int:
    """asyncpg's ``timestamptz_encode`` before it writes (asyncpg/pgproto/codecs/datetime.pyx)."""
    if not isinstance(value, dt.datetime):
        if not isinstance(value, dt.date):
            raise TypeError(
                "expected a datetime.date or datetime.datetime instance, "
                f"got {type(value).__name__!r}"
            )
        local = dt.timezone(dt.datetime.now(dt.UTC).astimezone().utcoffset() or dt.timedelta())
        value = dt.datetime(value.year, value.month, value.day, tzinfo=local)
    if value == _INFINITE:
        return _INFINITE_US
    if value == _NEGATIVE_INFINITE:
        return _NEGATIVE_INFINITE_US
    return (value.astimezone(dt.UTC) - _PG_EPOCH) // _MICROSECOND


def _decode_timestamptz(data: bytes) -> dt.datetime:
    (us,) = _INT64.unpack(data)
    if us == _PG_INFINITY:
        return _INFINITE
    if us == _PG_NEGATIVE_INFINITY:
        return _NEGATIVE_INFINITE
    return _PG_EPOCH + dt.timedelta(microseconds=us)


async def connect(
    dsn: str, search_path: str = SEARCH_PATH, *, timeout: float = 60
) -> asyncpg.Connection:
    """A connection of the projections' own (runners, rebuilds, replays), with ``timestamptz``
    encoded at once (``_encode_timestamptz``)."""
    conn = await asyncpg.connect(
        dsn,
        timeout=timeout,
        server_settings={"search_path": search_path, "application_name": "milestones"},
    )
    await init_connection(conn)
    await conn.set_type_codec(
        "timestamptz",
        encoder=_encode_timestamptz,
        decoder=_decode_timestamptz,
        schema="pg_catalog",
        format="binary",
    )
    return conn


async def create_pool(dsn: str, *, min_size: int = 10, max_size: int = 10) -> asyncpg.Pool:
    """A pool of ``connect``'s connections (asyncpg's default sizes unless given), released
    without asyncpg's reset query (``keep_session``)."""
    return await asyncpg.create_pool(
        dsn,
        init=init_connection,
        server_settings={"search_path": SEARCH_PATH, "application_name": "milestones"},
        min_size=min_size,
        max_size=max_size,
        reset=keep_session,
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs on release beyond what asyncpg always does (roll back a
    transaction left open, drop its listener callbacks): nothing.

    asyncpg's default also sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: a round trip per query (6 % of the query service's CPU under
    the benchmark's load, py-spy, and PostgreSQL's work besides) that undoes session state the
    pool's users never make. They are the queries and the notifier: no ``SET`` (settings are the
    pool's ``server_settings``), no ``LISTEN`` (the checkpoint watcher has a connection of its
    own), advisory locks only transaction-scoped (``pg_advisory_xact_lock``), cursors only
    inside transactions. Code that makes session state must use its own connection
    (``connect``), not the pool's: ``tests/test_ops.py`` checks a released connection is
    handed out again as it was."""


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
            await conn.execute(META_SQL)
            found = await conn.fetchval(
                f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'"
            )
            if found is not None and found != SCHEMA_VERSION:
                raise StartupError(
                    f"database schema {SCHEMA} is version {found}, "
                    f"this build needs {SCHEMA_VERSION}: "
                    "drop the read-model schema and let it rebuild from the event log"
                )
            await conn.execute(RUNNER_SQL)  # after the check: an old table may lack new columns
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


EVENTS_PREFIX = "milestones.events."


def sequence_key(subject: str) -> str | None:
    """The project an event belongs to (the first token after ``milestones.events.``): the unit
    within which parked events keep their order. Other subjects (rejections) have none."""
    if not subject.startswith(EVENTS_PREFIX):
        return None
    return subject[len(EVENTS_PREFIX) :].split(".", 1)[0] or None


def storable_text(value: str) -> str:
    """Text PostgreSQL takes: NUL and what is not UTF-8 (lone surrogates) written visibly."""
    return value.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def stored_time(value: dt.datetime) -> dt.datetime:
    """``storable.timestamp`` (the instant in UTC, saturated inside asyncpg's range), at once for
    what decoding a stored event gives: a UTC time within the range, returned as it is. A
    rebuild converts two times of every event."""
    if value.tzinfo is dt.UTC and TIME_MIN <= value <= TIME_MAX:
        return value
    return timestamp(value)


_HEADERS = msgspec.json.Encoder()


def encoded_headers(headers: dict[str, str] | None) -> bytes | None:
    return None if not headers else _HEADERS.encode(headers)


_PARK = (
    f"INSERT INTO {SCHEMA}.parked_events (projection, position, subject, project, type, error, "
    "behind, payload, headers, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
    "ON CONFLICT (projection, position) DO UPDATE SET error = EXCLUDED.error, "
    "behind = EXCLUDED.behind, attempts = parked_events.attempts + 1, parked_at = now()"
)

# (position, subject, type, error, behind, payload, headers, attempts)
ParkedRow = tuple[int, str, str | None, str, int | None, bytes, dict[str, str] | None, int]


async def park_many(conn: Conn, projection: str, rows: Sequence[ParkedRow]) -> None:
    """Keep events as they were stored (bytes, headers) with why they wait; text columns are made
    storable, so that parking itself cannot fail on what the event holds."""
    if rows:
        await conn.executemany(_PARK, [_park_args(projection, row) for row in rows])


def _park_args(projection: str, row: ParkedRow) -> tuple[Any, ...]:
    position, subject, type_, error, behind, payload, headers, attempts = row
    project = sequence_key(subject)
    return (
        projection,
        position,
        storable_text(subject),
        None if project is None else storable_text(project),
        None if type_ is None else storable_text(type_)[:200],
        storable_text(error)[:2000],
        behind,
        bytes(payload),
        encoded_headers(headers),
        attempts,
    )


async def park(
    conn: Conn,
    projection: str,
    position: int,
    subject: str,
    type_: str | None,
    error: str,
    payload: bytes,
    *,
    headers: dict[str, str] | None = None,
    behind: int | None = None,
) -> None:
    await park_many(
        conn, projection, [(position, subject, type_, error, behind, payload, headers, 1)]
    )
