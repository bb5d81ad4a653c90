"""Reads of the history read model (``ms_history``): the services call these instead of writing
SQL on the table themselves."""

from __future__ import annotations

from typing import Any

import asyncpg

from projections.db import Conn
from projections.history import COLUMNS

Executor = asyncpg.Pool | Conn


async def milestone_history(
    conn: Executor, milestone_id: str, *, project_id: str | None, after: int, limit: int
) -> list[dict[str, Any]]:
    """The milestone's schedule changes after position ``after``, oldest first."""
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM ms_history WHERE milestone_id = $1 AND position > $2 "
        "AND ($3::text IS NULL OR project_id = $3) ORDER BY position LIMIT $4",
        milestone_id,
        after,
        project_id,
        limit,
    )
    return [dict(r) for r in rows]
