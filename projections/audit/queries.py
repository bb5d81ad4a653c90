"""Reads of the audit read models (``audit_events``, ``audit_rejections``): the services call
these instead of writing SQL on the tables themselves."""

from __future__ import annotations

from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


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
