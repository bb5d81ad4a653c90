"""What a runner does with an event it cannot apply: whom to blame, and the sequenced dead-letter.

Blame decides between retrying and parking. The infrastructure failed (the connection, the
network, the server shutting down, a timeout): retry, never park, the event is fine. The event is
bad (it does not decode, a value PostgreSQL refuses, a value error in ``evolve``): park it at
once, retrying cannot help. Anything else (a bug, an error nobody classified): retry a few times,
then park it, so that nothing halts the projection for good.

Parking is sequenced per project, as Axon's sequenced dead-letter queue does: once an event of a
project is parked, every later event of that project is parked behind it, because a status row
depends on the project's earlier events (dependencies, reschedules); applying them past a hole
would show a state the log never had. Other projects go on. ``replay-parked`` applies a
projection's parked events in stream order (``projections.rebuild.replay_parked``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import msgspec
import nats.errors
from nats.aio.msg import Msg

from projections import db
from projections.base import Projection

Blame = Literal["infrastructure", "event", "unknown"]

# SQLSTATE classes: 22 data exception, 23 integrity constraint violation (the row the event makes)
_EVENT_CLASSES = ("22", "23")
# 08 connection, 40 rollback (serialization, deadlock), 53 resources, 55 object state (locks),
# 57 operator intervention (shutdown, cancel), 58 system, XX internal
_INFRA_CLASSES = ("08", "40", "53", "55", "57", "58", "XX")
_INFRA = (
    OSError,  # ConnectionError, socket errors
    TimeoutError,
    asyncpg.InternalClientError,  # "cannot switch to state 15" after a backend was terminated
    asyncpg.PostgresConnectionError,
    nats.errors.Error,
)


def blame(exc: BaseException, conn: asyncpg.Connection | None = None) -> Blame:
    """Who is at fault for ``exc`` raised while decoding or applying one event (or a batch)."""
    if conn is not None and conn.is_closed():
        return "infrastructure"
    if isinstance(exc, _INFRA):
        return "infrastructure"
    if isinstance(exc, ValueError):  # msgspec's decode errors, asyncpg's client-side DataError
        return "event"
    if isinstance(exc, asyncpg.InterfaceError):
        return "infrastructure"
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _EVENT_CLASSES:
            return "event"
        if state[:2] in _INFRA_CLASSES:
            return "infrastructure"
        return "unknown"
    if isinstance(exc, ArithmeticError):  # OverflowError: a date or number beyond a type
        return "event"
    return "unknown"


def described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class EventFailed(Exception):
    """An event failed for an unknown reason fewer than ``park_after`` times: the batch is
    retried (after a pause) before the event is parked."""

    def __init__(self, position: int, attempts: int, cause: BaseException) -> None:
        super().__init__(f"position {position} failed {attempts} time(s): {described(cause)}")
        self.position, self.attempts, self.cause = position, attempts, cause


@dataclass(slots=True)
class Item:
    """One message as the runner holds it: where it is, its raw bytes, and what it decoded to (or
    why it did not)."""

    position: int
    subject: str
    data: bytes
    headers: dict[str, str] | None
    record: Any = None
    error: str | None = None  # set when it could not be decoded
    attempts: int = 0  # times parked before (a replayed event)

    @property
    def project(self) -> str | None:
        return db.sequence_key(self.subject)

    @classmethod
    def decoded(
        cls,
        position: int,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        decode: Callable[[bytes], Any],
        attempts: int = 0,
    ) -> Item:
        item = cls(position, subject, data, headers, attempts=attempts)
        try:
            item.record = decode(data)
        except Exception as exc:  # undecodable: park it, never guess
            item.error = f"cannot decode: {described(exc)}"
        return item

    @classmethod
    def of(cls, msg: Msg, decode: Callable[[bytes], Any]) -> Item:
        return cls.decoded(position_of(msg), msg.subject, msg.data or b"", msg.headers, decode)


def position_of(msg: Msg) -> int:
    """A JetStream message's stream sequence. Read from its reply subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``)
    without building nats-py's ``Msg.metadata`` (two frozen dataclasses and a datetime: a tenth
    of a rebuild's CPU, measured with py-spy); any other form goes through nats-py's parser."""
    reply = msg.reply
    if reply and reply.startswith("$JS.ACK."):
        tokens = reply.split(".")
        if len(tokens) == 9:
            return int(tokens[5])
    return msg.metadata.sequence.stream


@dataclass(slots=True)
class Parked:
    item: Item
    error: str
    behind: int | None = None  # the parked position it waits for; None: it failed itself

    def row(self) -> db.ParkedRow:
        it = self.item
        return (
            it.position,
            it.subject,
            type_of(it.data),
            self.error,
            self.behind,
            it.data,
            it.headers,
            it.attempts + 1,
        )


@dataclass(slots=True)
class Settled:
    applied: int
    parked: list[Parked]
    blocked: dict[str, int]  # project -> the first parked position it waits behind, afterwards


async def settle(
    conn: asyncpg.Connection,
    projection: Projection[Any],
    schema: str,
    items: Sequence[Item],
    blocked: dict[str, int],
    failures: dict[tuple[str, int], int] | None = None,
    park_after: int = 3,
    label: str = "",
) -> Settled:
    """Apply ``items`` (in stream order) inside the caller's transaction; return what was
    parked. ``blocked`` (project -> parked position) is not changed: the caller takes
    ``Settled.blocked`` once its transaction commits. ``failures`` counts unknown failures per
    (label, position) across retries; without it an unknown failure parks at once (replay).

    Raises for infrastructure failures (the caller's transaction must roll back and retry) and
    ``EventFailed`` for an unknown failure not yet seen ``park_after`` times."""
    before, blocked = blocked, dict(blocked)
    parked: list[Parked] = []
    ready: list[Item] = []
    if not blocked:  # most batches: nothing parked before; then only what did not decode
        ready = [it for it in items if it.error is None]
        if len(ready) < len(items):
            ready = []
    if not ready:
        for it in items:
            if (root := _behind(it, blocked)) is not None:
                parked.append(Parked(it, f"behind parked position {root}", root))
            elif it.error is not None:
                parked.append(Parked(it, it.error))
                if (key := it.project) is not None:
                    blocked[key] = it.position
            else:
                ready.append(it)
    if not ready:
        return _in_order(0, parked, before)
    try:
        async with conn.transaction():
            await projection.apply(conn, [(it.position, it.record) for it in ready], schema)
        return _in_order(len(ready), parked, before)
    except Exception as exc:
        if blame(exc, conn) == "infrastructure":
            raise
    applied = await _one_by_one(
        conn, projection, schema, ready, blocked, parked, failures, park_after, label
    )
    return _in_order(applied, parked, before)


def _in_order(applied: int, parked: list[Parked], blocked: dict[str, int]) -> Settled:
    """What was parked, labelled as one pass in stream order labels it: the first parked event
    of a project failed itself, every later one waits behind it (however the batch was cut,
    the live runner and a rebuild park alike)."""
    first = dict(blocked)
    out: list[Parked] = []
    for p in sorted(parked, key=lambda p: p.item.position):
        key = p.item.project
        root = first.get(key) if key is not None else None
        if root is not None and root < p.item.position:
            out.append(Parked(p.item, f"behind parked position {root}", root))
            continue
        out.append(p)
        if key is not None:
            first[key] = p.item.position
    return Settled(applied, out, first)


async def _one_by_one(
    conn: asyncpg.Connection,
    projection: Projection[Any],
    schema: str,
    ready: list[Item],
    blocked: dict[str, int],
    parked: list[Parked],
    failures: dict[tuple[str, int], int] | None,
    park_after: int,
    label: str,
) -> int:
    """The batch failed: one event at a time (a savepoint each) finds the culprits, in stream
    order; adds to ``blocked`` and ``parked``, returns how many applied."""
    applied = 0
    for it in ready:
        key = it.project
        if (root := _behind(it, blocked)) is not None:
            parked.append(Parked(it, f"behind parked position {root}", root))
            continue
        try:
            async with conn.transaction():
                await projection.apply(conn, [(it.position, it.record)], schema)
            applied += 1
            if failures is not None:
                failures.pop((label, it.position), None)
            continue
        except Exception as exc:
            fault = blame(exc, conn)
            if fault == "infrastructure":
                raise
            error = described(exc)
            if fault == "unknown" and failures is not None:
                seen = failures[(label, it.position)] = failures.get((label, it.position), 0) + 1
                if seen < park_after:
                    raise EventFailed(it.position, seen, exc) from exc
                error = f"failed {seen} times: {error}"
        parked.append(Parked(it, error))
        if key is not None:
            blocked[key] = it.position
    return applied


def _behind(item: Item, blocked: dict[str, int]) -> int | None:
    """The parked position of the item's project it waits behind, if an earlier event of its
    project is parked (a later one in the same batch does not hold it back: it comes first)."""
    if not blocked:  # the common case: nothing parked, no subject to parse
        return None
    first = blocked.get(item.project) if item.project is not None else None
    return first if first is not None and first < item.position else None


async def held_back(conn: asyncpg.Connection, projection: str) -> tuple[dict[str, int], int]:
    """(project -> its first parked position, how many rows are parked) for one projection."""
    rows = await conn.fetch(
        f"SELECT project, min(position) AS first, count(*) AS n FROM {db.SCHEMA}.parked_events "
        "WHERE projection = $1 GROUP BY project",
        projection,
    )
    return (
        {r["project"]: r["first"] for r in rows if r["project"] is not None},
        sum(r["n"] for r in rows),
    )


def type_of(data: bytes) -> str | None:
    """The ``type`` a message says it has, if it says one."""
    try:
        found = msgspec.json.decode(data)
    except Exception:
        return None
    kind = found.get("type") if isinstance(found, dict) else None
    return kind if isinstance(kind, str) else None
