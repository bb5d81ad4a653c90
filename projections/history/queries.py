"""Reads of the history read model (``ms_history``): the services call these instead of writing
SQL on the table themselves."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from projections.db import Conn
from projections.history import COLUMNS

Executor = asyncpg.Pool | Conn

# A page's place in a history: the (occurred_at, position) of the last row shown.
Key = tuple[dt.datetime, int]


async def milestone_history(
    conn: Executor,
    milestone_id: str,
    *,
    project_id: str | None,
    after: Key | None,
    appended_after: int = 0,
    limit: int,
) -> list[dict[str, Any]]:
    """The milestone's schedule changes in time order: by when they happened (``occurred_at``,
    the CloudEvent time), then by position; only those after ``after`` (keyset) and appended
    after position ``appended_after``."""
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM ms_history WHERE milestone_id = $1 "
        "AND ($2::text IS NULL OR project_id = $2) AND position > $3 "
        "AND ($4::timestamptz IS NULL OR (occurred_at, position) > ($4::timestamptz, $5::bigint)) "
        "ORDER BY occurred_at, position LIMIT $6",
        milestone_id,
        project_id,
        appended_after,
        after[0] if after else None,
        after[1] if after else 0,
        limit,
    )
    return [dict(r) for r in rows]
