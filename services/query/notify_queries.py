"""The notifier's queries: project digests and the webhook delivery log.

A mixin of ``services.query.queries.Queries`` (it uses its pool, watcher, clock and
``consistent``). The delivery tables are the notifier's own (its outbox), not a read model, so
their SQL lives here and in ``services.notify``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg

from events.errors import Rejected
from projections.storable import timestamp
from projections.watch import CheckpointWatcher
from services.notify import digest
from services.query import requests as q
from services.query.params import One, Page, Params, bad, decode_cursor, encode_cursor

DELIVERIES = (
    "SELECT d.id, d.kind, d.project_id, d.milestone_id, d.stakeholder, d.url, d.position, "
    "d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, "
    "d.delivered_at, coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, "
    "'at', a.attempted_at, 'status', a.status_code, 'error', a.error, "
    "'ms', round(a.duration_ms::numeric, 1)) ORDER BY a.attempt) "
    "FROM delivery_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempt_log "
    "FROM deliveries d"
)


class NotifyQueries:
    pool: asyncpg.Pool
    watcher: CheckpointWatcher
    today: Callable[[], dt.date]
    at_risk_gap: int

    async def consistent(self, projection: str, p: Params) -> tuple[int, bool]:
        raise NotImplementedError  # Queries.consistent

    async def digest(self, p: q.DigestParams) -> One:
        """The project's digest as it would be sent now: nothing is recorded or sent, unless
        ``send`` (what ``digest_send`` does) or ``record`` (kept as the last digest, so the next
        one reports what changed since, but not sent)."""
        if p.send:
            return await self.digest_send(p)
        position, stale = await self.consistent("status", p)
        async with self.pool.acquire() as conn:
            built = await digest.build(
                conn, p.project_id, self.today(), self.at_risk_gap, record=p.record
            )
        return One({"digest": built, "queued_deliveries": 0}, position, stale)

    async def digest_send(self, p: q.DigestSendParams) -> One:
        """Build the digest, keep it as the last one (the next reports what changed since) and
        queue it for the project's subscribers."""
        position, stale = await self.consistent("status", p)
        async with self.pool.acquire() as conn:
            built, queued = await digest.send(conn, p.project_id, self.today(), self.at_risk_gap)
        return One({"digest": built, "queued_deliveries": queued}, position, stale)

    async def deliveries(self, p: q.DeliveriesParams) -> Page:
        """The delivery log: every webhook notification, its state and every attempt, oldest
        first."""
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        for name in ("project_id", "milestone_id", "stakeholder"):
            if (value := getattr(p, name)) is not None:
                where.append(f"d.{name} = {arg(value)}")
        if p.status is not None:
            where.append(f"d.status = ANY({arg(list(p.status))}::text[])")
        if p.kind is not None:
            where.append(f"d.kind = ANY({arg(list(p.kind))}::text[])")
        if (cursor := decode_cursor(p.cursor)) is not None:
            try:
                after = (timestamp(dt.datetime.fromisoformat(cursor[0])), str(cursor[1]))
            except (TypeError, ValueError, IndexError):
                raise bad(
                    "cursor is not one this API handed out: pass next_cursor unchanged"
                ) from None
            where.append(f"(d.created_at, d.id) > ({arg(after[0])}, {arg(after[1])})")
        rows = await self.pool.fetch(
            f"{DELIVERIES}{' WHERE ' + ' AND '.join(where) if where else ''} "
            f"ORDER BY d.created_at, d.id LIMIT {arg(p.limit + 1)}",
            *args,
        )
        next_cursor = None
        if len(rows) > p.limit:
            rows = rows[: p.limit]
            next_cursor = encode_cursor([rows[-1]["created_at"].isoformat(), rows[-1]["id"]])
        return Page([dict(r) for r in rows], self.watcher.positions.get("status", 0), next_cursor)

    async def retry_delivery(self, p: q.RetryDeliveryParams) -> One:
        """Send a failed (or pending) delivery again now, with its attempts counted afresh."""
        row = await self.pool.fetchrow(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now() "
            "WHERE id = $1 AND status <> 'delivered' RETURNING id, status",
            p.id,
        )
        if row is None:
            known = await self.pool.fetchval("SELECT status FROM deliveries WHERE id = $1", p.id)
            if known is None:
                raise Rejected(
                    "not_found", f"delivery {p.id!r} is not known: see `milestones deliveries`"
                )
            raise Rejected("conflict", f"delivery {p.id} was delivered already: nothing to retry")
        return One(dict(row), self.watcher.positions.get("status", 0))
