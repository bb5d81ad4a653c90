"""Reads of the status read model's tables (``ms_status``, ``ms_subscriptions``, …): the services
call these instead of writing SQL on the tables themselves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import asyncpg

from projections.db import Conn
from projections.status import StatusRow, from_json

Executor = asyncpg.Pool | Conn


async def load(conn: Executor, project_ids: list[str]) -> dict[str, list[StatusRow]]:
    """The rows of these projects, by project, each in milestone order (one indexed read;
    each row as JSON text, decoded in one pass: ``projections.status.from_json``)."""
    out: dict[str, list[StatusRow]] = {p: [] for p in project_ids}
    for (text,) in await conn.fetch(
        "SELECT row_to_json(s)::text FROM ms_status s WHERE project_id = ANY($1::text[]) "
        "ORDER BY ord, milestone_id",
        project_ids,
    ):
        row = from_json(text)
        out[row.project_id].append(row)
    return out


# the project's target beside every row: one statement, so one round trip and one snapshot
_PROJECT = (
    "SELECT row_to_json(s)::text AS row, "
    "(SELECT target FROM ms_projects WHERE project_id = $1) AS project_target "
    "FROM ms_status s WHERE project_id = $1 ORDER BY ord, milestone_id"
)


async def project_texts(conn: Executor, project_id: str) -> tuple[list[str], dt.date | None]:
    """One project's rows in milestone order, each as its JSON text (``from_json`` decodes it),
    and its target finish (``load`` and ``targets`` in one read; a project without rows has no
    target read: None). Texts, not rows: the query service's memo of judged projects compares
    them with the texts it judged before (``services.query.judged_memo``)."""
    records = await conn.fetch(_PROJECT, project_id)
    target = records[0]["project_target"] if records else None
    return [r["row"] for r in records], target


async def targets(conn: Executor, project_ids: list[str]) -> dict[str, Any]:
    """Each project's target finish (``ProjectTargetSet``), None when it has none."""
    rows = await conn.fetch(
        "SELECT project_id, target FROM ms_projects WHERE project_id = ANY($1::text[])",
        project_ids,
    )
    found = {r["project_id"]: r["target"] for r in rows}
    return {p: found.get(p) for p in project_ids}


async def subscriptions(conn: Executor, projects: Iterable[str]) -> list[dict[str, Any]]:
    """The webhook subscriptions of these projects, oldest first (secrets included: for the
    notifier only)."""
    rows = await conn.fetch(
        "SELECT project_id, scope, stakeholder, url, secret, payload FROM ms_subscriptions "
        "WHERE project_id = ANY($1::text[]) ORDER BY position",
        list(set(projects)),
    )
    return [dict(r) for r in rows]


async def subscribed_projects(conn: Executor, *, whole_project_only: bool = False) -> list[str]:
    """Projects somebody subscribed to (``whole_project_only``: to the whole project, not to
    one milestone)."""
    where = " WHERE scope = ''" if whole_project_only else ""
    return [
        r["project_id"]
        for r in await conn.fetch(
            f"SELECT DISTINCT project_id FROM ms_subscriptions{where} ORDER BY project_id"
        )
    ]


async def milestone_owners(conn: Executor, milestone_id: str) -> list[str]:
    """The projects that have a milestone with this id (ids are unique within a project only)."""
    rows = await conn.fetch(
        "SELECT project_id FROM ms_status WHERE milestone_id = $1 ORDER BY project_id", milestone_id
    )
    return [r["project_id"] for r in rows]


async def projects(
    conn: Executor, *, after: str = "", only: str | None = None, limit: int
) -> list[dict[str, Any]]:
    """Projects by id after ``after`` (``only``: that one project)."""
    rows = await conn.fetch(
        "SELECT project_id, name, goals, dependency_policy, target, created_at, position "
        "FROM ms_projects "
        "WHERE project_id > $1 AND ($2::text IS NULL OR project_id = $2) "
        "ORDER BY project_id LIMIT $3",
        after,
        only,
        limit,
    )
    return [dict(r) for r in rows]


async def status_reports(
    conn: Executor, project_id: str, *, milestone_id: str | None, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """The project's status reports, newest first (``before``: older than that position)."""
    rows = await conn.fetch(
        "SELECT position, project_id, milestone_id, reported_at, actor, health, note "
        "FROM ms_status_reports WHERE project_id = $1 "
        "AND ($2::text IS NULL OR milestone_id = $2) AND ($3::bigint IS NULL OR position < $3) "
        "ORDER BY position DESC LIMIT $4",
        project_id,
        milestone_id,
        before,
        limit,
    )
    return [dict(r) for r in rows]


async def shown_subscriptions(
    conn: Executor, project_id: str, *, after: int, limit: int
) -> list[dict[str, Any]]:
    """A project's subscriptions as anyone may see them: never the secret, only whether one is
    set (``signed``)."""
    rows = await conn.fetch(
        "SELECT project_id, milestone_id, stakeholder, url, secret IS NOT NULL AS signed, "
        "position, subscribed_at FROM ms_subscriptions WHERE project_id = $1 AND position > $2 "
        "ORDER BY position LIMIT $3",
        project_id,
        after,
        limit,
    )
    return [dict(r) for r in rows]
