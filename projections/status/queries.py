"""Reads of the status read model's tables (``ms_status``, ``ms_subscriptions``, …): the services
call these instead of writing SQL on the tables themselves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from projections.status import COLUMNS, StatusRow, from_db

Executor = asyncpg.Connection | asyncpg.Pool


async def load(conn: Executor, project_ids: list[str]) -> dict[str, list[StatusRow]]:
    """The rows of these projects, by project, each in milestone order (one indexed read)."""
    out: dict[str, list[StatusRow]] = {p: [] for p in project_ids}
    for r in await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM ms_status WHERE project_id = ANY($1::text[]) "
        "ORDER BY ord, milestone_id",
        project_ids,
    ):
        out[r["project_id"]].append(from_db(r))
    return out


async def subscriptions(conn: Executor, projects: Iterable[str]) -> list[dict[str, Any]]:
    """The webhook subscriptions of these projects, oldest first (secrets included: the notifier's)."""
    rows = await conn.fetch(
        "SELECT project_id, scope, stakeholder, url, secret FROM ms_subscriptions "
        "WHERE project_id = ANY($1::text[]) ORDER BY position",
        list(set(projects)),
    )
    return [dict(r) for r in rows]


async def subscribed_projects(conn: Executor, *, whole_project_only: bool = False) -> list[str]:
    """Projects somebody subscribed to (``whole_project_only``: to the whole project, not one milestone)."""
    where = " WHERE scope = ''" if whole_project_only else ""
    return [
        r["project_id"]
        for r in await conn.fetch(
            f"SELECT DISTINCT project_id FROM ms_subscriptions{where} ORDER BY project_id"
        )
    ]
