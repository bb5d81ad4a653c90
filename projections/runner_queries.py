"""Reads of the runner's own tables (``checkpoints``, ``parked_events``): how far each projection
is, and what it could not apply."""

from __future__ import annotations

from typing import Any

import asyncpg

from projections.db import SCHEMA, Conn

Executor = asyncpg.Pool | Conn


async def checkpoints(conn: Executor) -> list[dict[str, Any]]:
    """Each projection's position, pending events, rate and how many events it parked."""
    rows = await conn.fetch(
        "SELECT c.projection, c.position, c.pending, c.rate, c.updated_at, "
        f"(SELECT count(*) FROM {SCHEMA}.parked_events p WHERE p.projection = c.projection) "
        f"AS parked FROM {SCHEMA}.checkpoints c ORDER BY c.projection"
    )
    return [dict(r) for r in rows]


async def parked_events(
    conn: Executor, *, projection: str | None, limit: int
) -> list[dict[str, Any]]:
    """Parked events (of one projection, or of all), by projection and position."""
    rows = await conn.fetch(
        "SELECT projection, position, subject, type, error, attempts, parked_at, payload "
        f"FROM {SCHEMA}.parked_events WHERE ($1::text IS NULL OR projection = $1) "
        "ORDER BY projection, position LIMIT $2",
        projection,
        limit,
    )
    return [dict(r) for r in rows]
