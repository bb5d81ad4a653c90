"""Reads of the runner's own tables (``checkpoints``, ``parked_events``): how far each projection
is, and what it could not apply."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

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
    """Parked events (of one projection, or of all), by projection and position. ``payload`` is
    the raw message (bytes, as stored in the log: the caller decides how to show it), ``headers``
    its NATS headers, ``behind`` the parked position it waits for (None: it failed itself)."""
    rows = await conn.fetch(
        "SELECT projection, position, subject, project, type, error, behind, attempts, "
        f"parked_at, payload, headers FROM {SCHEMA}.parked_events "
        "WHERE ($1::text IS NULL OR projection = $1) ORDER BY projection, position LIMIT $2",
        projection,
        limit,
    )
    return [
        {
            **dict(r),
            "payload": bytes(r["payload"]),
            "headers": None if r["headers"] is None else msgspec.json.decode(r["headers"]),
        }
        for r in rows
    ]
