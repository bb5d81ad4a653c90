"""Reads of the audit read models (``audit_events``, ``audit_rejections``): the services call
these instead of writing SQL on the tables themselves."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from projections.audit import COLUMNS
from projections.db import Conn

Executor = asyncpg.Pool | Conn


async def last_position(conn: Executor, project_id: str) -> int | None:
    """The position of the project's last event (None: the project is not known)."""
    return await conn.fetchval(
        "SELECT max(position) FROM audit_events WHERE project_id = $1", project_id
    )


async def project_changes(
    conn: Executor, project_id: str, after: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The project's events after ``after`` (the first ``limit``), and how many there are in all."""
    rows = await conn.fetch(
        "SELECT position, occurred_at, type, milestone_id, actor, payload FROM audit_events "
        "WHERE project_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        project_id,
        after,
        limit + 1,
    )
    total = len(rows)
    if total > limit:
        total = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE project_id = $1 AND position > $2",
            project_id,
            after,
        )
    return [dict(r) for r in rows[:limit]], total


async def project_known(conn: Executor, project_id: str) -> bool:
    """Whether the project has any event (it may have no milestone yet)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE project_id = $1)", project_id
        )
    )


FILTERED = (
    "project_id",
    "milestone_id",
    "actor",
    "principal",
    "source",
    "type",
    "correlation_id",
)


@dataclass(frozen=True, kw_only=True)
class AuditFilter:
    """Which events: ``equal`` columns (of ``FILTERED``) with these values, ``occurred_at`` in
    [``occurred_from``, ``occurred_to``), after position ``after``."""

    equal: Mapping[str, str] = field(default_factory=dict)
    occurred_from: dt.datetime | None = None
    occurred_to: dt.datetime | None = None
    after: int = 0

    def sql(self) -> tuple[str, list[Any]]:
        """The ``WHERE`` clause and its arguments."""
        where: list[str] = ["position > $1"]
        args: list[Any] = [self.after]
        for column, value in self.equal.items():
            if column not in FILTERED:
                raise ValueError(f"audit events are not filtered by {column}")
            args.append(value)
            where.append(f"{column} = ${len(args)}")
        for op, bound in ((">=", self.occurred_from), ("<", self.occurred_to)):
            if bound is not None:
                args.append(bound)
                where.append(f"occurred_at {op} ${len(args)}")
        return " AND ".join(where), args


SELECT_EVENTS = f"SELECT {', '.join(COLUMNS)} FROM audit_events"


async def events(conn: Executor, matching: AuditFilter, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` matching events in stream order."""
    where, args = matching.sql()
    rows = await conn.fetch(
        f"{SELECT_EVENTS} WHERE {where} ORDER BY position LIMIT ${len(args) + 1}", *args, limit
    )
    return [dict(r) for r in rows]


async def every_event(pool: asyncpg.Pool, matching: AuditFilter) -> AsyncIterator[asyncpg.Record]:
    """Every matching event in stream order, through a server-side cursor (never all in memory)."""
    where, args = matching.sql()
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(
            f"{SELECT_EVENTS} WHERE {where} ORDER BY position", *args, prefetch=500
        ):
            yield row


async def rejections(conn: Executor, *, after: int, limit: int) -> list[dict[str, Any]]:
    """Refused inbox messages after position ``after``, oldest first."""
    rows = await conn.fetch(
        "SELECT position, inbox_seq, subject, received_at, code, message, payload "
        "FROM audit_rejections WHERE position > $1 ORDER BY position LIMIT $2",
        after,
        limit,
    )
    return [dict(r) for r in rows]
