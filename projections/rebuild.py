"""Blue/green rebuild and replay of parked events.

A rebuild replays the stream from position 1 into fresh tables in a schema of their own while
the live runner keeps the old tables current and queries keep reading them. When it has caught
up, one transaction locks the live checkpoint row (the live runner waits at its next batch),
applies what is left, moves the old tables out and the new ones in (ALTER TABLE … SET SCHEMA)
and sets the checkpoint. Queries see either the old tables or the new ones, never a mix.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Generic

import asyncpg
import msgspec
import structlog
from nats.aio.client import Client as NATS

from events.errors import StartupError
from projections import db
from projections.base import Batch, Projection, R
from projections.parking import Item, settle
from projections.runner import Runner, groups

__all__ = ["Together", "build_indexes", "groups", "rebuild", "replay_parked"]

log = structlog.get_logger("milestones.rebuild")
S = db.SCHEMA
REBUILT = "@rebuild"  # what a rebuild parks waits under "<name>@rebuild" until the swap
PROGRESS_TICK_S = 0.25
# A rebuild's batches are larger than the live runner's (2,000): measured 2026-12-07 on the
# benchmark's log (417,000 events, each project's events interleaved with 255 others' as the
# intake appends them), 8,000 against 2,000: status alone +14 % (46,500 against 40,800
# events/s: a milestone's row is taken out and written back once for several of its events,
# and a batch's round trips are shared by more), all three +14 %, audit +8 %, history +3 %;
# peak RSS 120 / 170 MB against 123 / 128 MB (status / all three), still bounded by the batch,
# not the log
REBUILD_BATCH = 8000
# Connections that build a rebuild's secondary indexes at once, as ``pg_restore --jobs`` does:
# two, the cores of the machine the benchmark runs on. Audit's eight indexes over 417,000 rows:
# 2.31-2.52 s against 2.68-2.90 s on one (four runs each, 2026-12-07); the builds also wait on
# the disk, so two connections do not halve it
INDEX_CONNECTIONS = 2

# the storage parameters that keep autovacuum off a table being rebuilt (``rebuild``), and
# their names, to reset when it is swapped in
_AUTOVACUUM = "autovacuum_enabled, toast.autovacuum_enabled"
_NO_AUTOVACUUM = "autovacuum_enabled = false, toast.autovacuum_enabled = false"

# ``on_progress(done, last)``: the stream position applied so far and the last one to reach (a
# rebuild's estimate is the stream's last sequence when it starts; its final call has
# done == last). Called from the event loop: it must not block.
OnProgress = Callable[[int, int], None]


@contextlib.asynccontextmanager
async def _reporting(
    runner: Runner, last: int, on_progress: OnProgress | None
) -> AsyncIterator[None]:
    """Tell ``on_progress`` the runner's position as it moves (every tick while it runs)."""
    if on_progress is None:
        yield
        return
    report = on_progress

    async def tick() -> None:
        shown = -1
        while True:
            if runner.position != shown:
                shown = runner.position
                report(min(shown, last), last)
            await asyncio.sleep(PROGRESS_TICK_S)

    task = asyncio.ensure_future(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _last_position(nc: NATS, stream: str) -> int:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.last_seq)


class Together(Generic[R]):
    """Several projections of one stream and subject as one: each event is read and decoded once
    and applied to every member in the same transaction. A rebuild of status + history + audit
    this way reads the stream once instead of three times (the read and the decode are most of a
    rebuild's CPU, measured with py-spy). The runner applies and parks member by member
    (``members``), so an event one read model cannot hold is parked for that one only."""

    def __init__(self, members: Sequence[Projection[R]]) -> None:
        first = members[0]
        if any((p.stream, p.subject) != (first.stream, first.subject) for p in members):
            raise ValueError("projections rebuilt together must read the same stream and subject")
        self.members = list(members)
        self.name = "+".join(p.name for p in members)
        self.stream, self.subject = first.stream, first.subject
        self.decode: Callable[[bytes], R] = first.decode
        self.tables = tuple(t for p in members for t in p.tables)
        self.schema_sql = "\n".join(p.schema_sql for p in members)

    async def apply(self, conn: asyncpg.Connection, batch: Batch[R], schema: str) -> None:
        for p in self.members:
            await p.apply(conn, batch, schema)


def _tables_then_indexes(members: Sequence[Projection[R]]) -> tuple[str, str]:
    """The SQL that makes the members' tables, and the SQL of their secondary indexes to run
    after the load; a member that does not split them out has its ``schema_sql`` run first."""
    tables, indexes = [], []
    for p in members:
        table_sql, index_sql = getattr(p, "table_sql", None), getattr(p, "index_sql", None)
        if isinstance(table_sql, str) and isinstance(index_sql, str):
            tables.append(table_sql)
            indexes.append(index_sql)
        else:
            tables.append(p.schema_sql)
    return "\n".join(tables), "\n".join(indexes)


async def build_indexes(conn: asyncpg.Connection, dsn: str, shadow: str, sql: str) -> None:
    """The secondary indexes, built over ``INDEX_CONNECTIONS`` connections at once (as
    ``pg_restore --jobs`` does): nothing else runs while they are built, and one build keeps
    about one core busy. Each connection takes the next statement as soon as it is free (a
    shared queue, each statement in its own transaction); a failure stops the others after
    the statement in hand and fails the rebuild (its shadow schema is dropped at the next one).

    A queue rather than every n-th statement each: the builds differ by up to 300 times (audit's
    correlation index 0.35 s, status's 0.001-0.012 s, 2026-12-07), and split every other
    statement the two connections of a rebuild of all three finished 1.25 and 1.80 s after the
    load (PostgreSQL's log), one core idle for the last half second."""
    statements = [
        s.strip()
        for s in "\n".join(
            line for line in sql.splitlines() if not line.lstrip().startswith("--")
        ).split(";")
        if s.strip()
    ]
    lanes = min(INDEX_CONNECTIONS, len(statements))
    extra = [await db.connect(dsn, f"{shadow}, {S}") for _ in range(lanes - 1)]
    queue = collections.deque(statements)

    async def build(c: asyncpg.Connection) -> None:
        try:
            while queue:
                await c.execute(queue.popleft())
        except BaseException:
            queue.clear()  # the rebuild fails: the other connections stop after their build
            raise

    try:
        built = await asyncio.gather(
            *(build(c) for c in [conn, *extra]),
            return_exceptions=True,  # every build ends before the connections close
        )
        for outcome in built:
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        for c in extra:
            await c.close()


def _for_rebuild(p: Projection[R]) -> Projection[R]:
    """The read model as one rebuild applies it: with state of that rebuild's own where it keeps
    some between batches (``base``'s optional ``for_rebuild``), so that nothing outlives it."""
    made = getattr(p, "for_rebuild", None)
    return p if made is None else made()


async def _flush(conn: asyncpg.Connection, members: Sequence[Projection[R]], schema: str) -> None:
    """What the members hold in memory, to their tables (``base``'s optional ``flush``)."""
    for p in members:
        if (flush := getattr(p, "flush", None)) is not None:
            await flush(conn, schema)


async def rebuild(
    projection: Projection[R] | Sequence[Projection[R]],
    dsn: str,
    nc: NATS,
    *,
    batch_size: int = REBUILD_BATCH,
    on_progress: OnProgress | None = None,
) -> int:
    """Rebuild one projection (or several that read the same stream, with one read) from
    position 1 and swap the new tables in; returns the new checkpoint. ``on_progress`` is told
    how far the replay has come (``OnProgress``)."""
    given = [projection] if not isinstance(projection, Sequence) else list(projection)
    members = [_for_rebuild(p) for p in given]  # state of this rebuild's own (status' rows)
    source: Projection[R] = members[0] if len(members) == 1 else Together(members)
    names = sorted(p.name for p in members)
    label = source.name
    shadow, trash, ck = (
        f"{S}_next_{label.replace('+', '_')}",
        f"{S}_old_{label.replace('+', '_')}",
        f"{label}@rebuild",
    )
    conn = await db.connect(dsn, f"{shadow}, {S}")
    try:
        for name in names:
            if not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", db.lock_key(f"{name}@rebuild")
            ):
                raise StartupError(f"a rebuild of {name} is already running")
        await conn.execute(f"DROP SCHEMA IF EXISTS {shadow} CASCADE; CREATE SCHEMA {shadow}")
        # the tables land in the first schema on the path: the shadow. Secondary indexes wait
        # until the replay has caught up when every member splits them out (``base``'s note):
        # one index build after the load instead of an index update per row (audit's eight
        # indexes were 80 % of an audit row's insert, py-spy and EXPLAIN ANALYZE)
        table_sql, index_sql = _tables_then_indexes(members)
        await conn.execute(table_sql)
        # no autovacuum on tables this rebuild alone is filling: over five rebuilds of all three
        # it vacuumed or analyzed their shadow tables 22 times (PostgreSQL's log, 2026-12-07),
        # work on the other core the load wanted, and the index build and the swap wait for its
        # lock until it is cancelled (deadlock_timeout: a swap took 1.4 s instead of 0.02). The
        # swap gives them autovacuum back, so the live tables are vacuumed as any others
        for table in source.tables:
            await conn.execute(f"ALTER TABLE {shadow}.{table} SET ({_NO_AUTOVACUUM})")
        await conn.execute(f"DELETE FROM {S}.checkpoints WHERE projection = $1", ck)
        await conn.execute(
            f"DELETE FROM {S}.parked_events WHERE projection = ANY($1::text[])",
            [f"{name}{REBUILT}" for name in names],
        )
        # each member parks on its own ("status@rebuild"): a combined rebuild parks what a
        # runner of that read model alone would, no more
        runner = Runner(
            source,
            dsn,
            nc,
            schema=shadow,
            checkpoint=ck,
            batch_size=batch_size,
            park_suffix=REBUILT,
        )
        never = asyncio.Event()
        last = await _last_position(nc, source.stream) if on_progress else 0
        async with _reporting(runner, last, on_progress):
            await runner.consume(conn, never, catch_up=True)
        await _flush(conn, members, shadow)
        if index_sql:
            log.info("rebuild caught up, indexing", projection=label, position=runner.position)
            await build_indexes(conn, dsn, shadow, index_sql)
        log.info("rebuild caught up, swapping", projection=label, position=runner.position)
        async with conn.transaction():
            live = 0
            for name in names:  # a fixed order: two rebuilds never wait on each other in a cycle
                position = await conn.fetchval(
                    f"SELECT position FROM {S}.checkpoints WHERE projection = $1 FOR UPDATE", name
                )
                live = max(live, position or 0)
            if runner.position < live:
                await runner.consume(conn, never, catch_up=True)
                await _flush(conn, members, shadow)
            await conn.execute(f"DROP SCHEMA IF EXISTS {trash} CASCADE; CREATE SCHEMA {trash}")
            for table in source.tables:
                await conn.execute(f"ALTER TABLE {shadow}.{table} RESET ({_AUTOVACUUM})")
                await conn.execute(f"ALTER TABLE {S}.{table} SET SCHEMA {trash}")
                await conn.execute(f"ALTER TABLE {shadow}.{table} SET SCHEMA {S}")
            for name in names:
                await conn.execute(
                    f"INSERT INTO {S}.checkpoints (projection, position) VALUES ($1, $2) "
                    "ON CONFLICT (projection) DO UPDATE "
                    "SET position = EXCLUDED.position, updated_at = now()",
                    name,
                    runner.position,
                )
                # what the rebuild parked replaces what the live runner had parked
                await conn.execute(f"DELETE FROM {S}.parked_events WHERE projection = $1", name)
                await conn.execute(
                    f"UPDATE {S}.parked_events SET projection = $1 WHERE projection = $2",
                    name,
                    f"{name}{REBUILT}",
                )
                await conn.execute(
                    f"UPDATE {S}.checkpoints SET parked_epoch = parked_epoch + 1 "
                    "WHERE projection = $1",
                    name,
                )
                await conn.execute(
                    "SELECT pg_notify($1, $2)", db.NOTIFY_CHANNEL, f"{name}:{runner.position}"
                )
            await conn.execute(f"DELETE FROM {S}.checkpoints WHERE projection = $1", ck)
        await conn.execute(
            f"DROP SCHEMA IF EXISTS {trash} CASCADE; DROP SCHEMA IF EXISTS {shadow} CASCADE"
        )
        log.info("rebuild swapped in", projection=label, position=runner.position)
        if on_progress is not None:
            on_progress(runner.position, runner.position)
        return runner.position
    finally:
        await conn.close()


async def replay_parked(
    projection: Projection[R],
    dsn: str,
    *,
    batch_size: int = 500,
    on_progress: OnProgress | None = None,
) -> tuple[int, int]:
    """Apply a projection's parked events again, in stream order, in one transaction that holds
    the live checkpoint row (the live runner waits at its next batch). What still fails stays
    parked, with every later event of its project behind it. Returns (applied, still parked).

    Each project's parked events are the whole tail of that project up to the checkpoint
    (``projections.parking``), so applying them in order gives what an uninterrupted run would
    have: the read model equals a rebuild. ``on_progress(position, last)`` after each batch: the
    position of the last parked event tried, and of the last one to try."""
    name = projection.name
    conn = await db.connect(dsn)
    applied = 0
    try:
        async with conn.transaction():
            await conn.execute(
                f"SELECT position FROM {S}.checkpoints WHERE projection = $1 FOR UPDATE", name
            )
            rows = await conn.fetch(
                "SELECT position, subject, payload, headers, attempts "
                f"FROM {S}.parked_events WHERE projection = $1 ORDER BY position",
                name,
            )
            await conn.execute(f"DELETE FROM {S}.parked_events WHERE projection = $1", name)
            blocked: dict[str, int] = {}
            for start in range(0, len(rows), batch_size):
                items = [
                    Item.decoded(
                        r["position"],
                        r["subject"],
                        bytes(r["payload"]),
                        _headers(r["headers"]),
                        projection.decode,
                        attempts=r["attempts"],
                    )
                    for r in rows[start : start + batch_size]
                ]
                outcome = await settle(conn, projection, S, items, blocked)
                await db.park_many(conn, name, [p.row() for p in outcome.parked])
                for p in outcome.parked:
                    if p.behind is None:
                        log.warning(
                            "still parked", projection=name, position=p.item.position, error=p.error
                        )
                applied += outcome.applied
                blocked = outcome.blocked
                if on_progress is not None:
                    on_progress(items[-1].position, rows[-1]["position"])
            await conn.execute(
                f"UPDATE {S}.checkpoints SET parked_epoch = parked_epoch + 1 WHERE projection = $1",
                name,
            )
        remaining = await conn.fetchval(
            f"SELECT count(*) FROM {S}.parked_events WHERE projection = $1", name
        )
        return applied, remaining
    finally:
        await conn.close()


def _headers(stored: bytes | None) -> dict[str, str] | None:
    return None if stored is None else msgspec.json.decode(stored)
