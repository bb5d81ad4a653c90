"""The notifier's queries: project digests, the webhook delivery log, subscriptions.

A mixin of ``services.query.queries.Queries`` (it uses its pool, watcher, clock and ``consistent``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from events.common import ID_PATTERN
from events.errors import Rejected
from projections.watch import CheckpointWatcher
from services.notify import digest
from services.notify.decision import ALL_KINDS
from services.query.params import (
    ID,
    MAX_LIMIT,
    One,
    Page,
    bad,
    decode_cursor,
    encode_cursor,
    p_int,
    p_list,
)


class NotifyQueries:
    pool: asyncpg.Pool
    watcher: CheckpointWatcher
    today: Callable[[], dt.date]
    at_risk_gap: int

    async def consistent(self, projection: str, params: Mapping[str, Any]) -> tuple[int, bool]:
        raise NotImplementedError  # Queries.consistent

    async def digest(self, params: Mapping[str, Any]) -> One:
        """The project's digest. ``record``: keep it as the last digest (the next one reports what
        changed since); ``send``: also queue it for the project's subscribers (implies record)."""
        pid = params.get("project_id")
        if not isinstance(pid, str) or not ID.fullmatch(pid):
            raise bad(f"project_id must match {ID_PATTERN}, got {pid!r}")
        position, stale = await self.consistent("status", params)
        flags = {
            name: str(params.get(name, "")).lower() in ("1", "true", "yes")
            for name in ("record", "send")
        }
        async with self.pool.acquire() as conn:
            if flags["send"]:
                built, queued = await digest.send(conn, pid, self.today(), self.at_risk_gap)
                return One({"digest": built, "queued_deliveries": queued}, position, stale)
            return One(
                {
                    "digest": await digest.build(
                        conn, pid, self.today(), self.at_risk_gap, record=flags["record"]
                    ),
                    "queued_deliveries": 0,
                },
                position,
                stale,
            )

    DELIVERY_STATUS = ("pending", "delivered", "failed")

    async def deliveries(self, params: Mapping[str, Any]) -> Page:
        """The delivery log: every webhook notification, its state and every attempt, oldest first."""
        where, args = [], []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        for name in ("project_id", "milestone_id", "stakeholder"):
            if params.get(name):
                where.append(f"d.{name} = {arg(str(params[name]))}")
        if (states := p_list(params, "status", self.DELIVERY_STATUS)) is not None:
            where.append(f"d.status = ANY({arg(states)}::text[])")
        if (kinds := p_list(params, "kind", ALL_KINDS)) is not None:
            where.append(f"d.kind = ANY({arg(kinds)}::text[])")
        if (cursor := decode_cursor(params)) is not None:
            try:
                after = (dt.datetime.fromisoformat(cursor[0]), str(cursor[1]))
            except Exception:
                raise bad(
                    "cursor is not one this API handed out: pass next_cursor unchanged"
                ) from None
            where.append(f"(d.created_at, d.id) > ({arg(after[0])}, {arg(after[1])})")
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        rows = await self.pool.fetch(
            "SELECT d.id, d.kind, d.project_id, d.milestone_id, d.stakeholder, d.url, d.position, d.status, "
            "d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at, "
            "coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, 'at', a.attempted_at, "
            "'status', a.status_code, 'error', a.error, 'ms', round(a.duration_ms::numeric, 1)) ORDER BY a.attempt) "
            "FROM delivery_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempt_log "
            f"FROM deliveries d{' WHERE ' + ' AND '.join(where) if where else ''} "
            f"ORDER BY d.created_at, d.id LIMIT {limit + 1}",
            *args,
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor([rows[-1]["created_at"].isoformat(), rows[-1]["id"]])
        return Page([dict(r) for r in rows], self.watcher.positions.get("status", 0), next_cursor)

    async def retry_delivery(self, params: Mapping[str, Any]) -> One:
        """Send a failed (or pending) delivery again now, with its attempts counted afresh."""
        did = str(params.get("id") or "")
        row = await self.pool.fetchrow(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now() "
            "WHERE id = $1 AND status <> 'delivered' RETURNING id, status",
            did,
        )
        if row is None:
            known = await self.pool.fetchval("SELECT status FROM deliveries WHERE id = $1", did)
            if known is None:
                raise Rejected(
                    "not_found", f"delivery {did!r} is not known: see `milestones deliveries`"
                )
            raise Rejected("conflict", f"delivery {did} was delivered already: nothing to retry")
        return One(dict(row), self.watcher.positions.get("status", 0))

    async def subscriptions(self, params: Mapping[str, Any]) -> Page:
        """Who is told about a project (secrets are never shown, only whether one is set)."""
        position, stale = await self.consistent("status", params)
        rows = await self.pool.fetch(
            "SELECT project_id, milestone_id, stakeholder, url, secret IS NOT NULL AS signed, position, subscribed_at "
            "FROM ms_subscriptions WHERE project_id = $1 ORDER BY position",
            params.get("project_id"),
        )
        return Page([dict(r) for r in rows], position, None, stale)
