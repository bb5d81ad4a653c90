"""Project digest: the status of every milestone, and what changed since the previous digest.

Built from the read models (status judged against the clock, the audit trail for changes) and
recorded in ``digests``, so the next one starts where this one ended. Sent to a project's
subscribers on a schedule (``MILESTONES_DIGEST_EVERY_S`` seconds, by the notifier) and built on
demand (``milestones digest PROJECT``, ``GET /projects/{id}/digest``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from events.errors import Rejected
from projections.audit import queries as audit_queries
from projections.db import Conn
from projections.status import queries as status_queries
from projections.status import sign_off
from services.domain import health
from services.notify.decision import describe
from services.notify.outbox import Notification, delivery_id, enqueue, subscriptions

MAX_CHANGES = 200


class Change(msgspec.Struct, kw_only=True):
    position: int
    occurred_at: dt.datetime
    type: str
    milestone_id: str | None
    actor: str | None
    summary: str


class Digest(msgspec.Struct, kw_only=True):
    project_id: str
    created_at: dt.datetime
    today: dt.date
    position: int  # the project's last event included
    since_position: int  # the previous digest's position (0: the first digest)
    since: dt.datetime | None
    counts: dict[str, int]  # milestones by health
    milestones: list[dict[str, Any]]  # judged status rows (health, reasons, expected finish)
    changes: list[Change]  # every event since the previous digest (the first MAX_CHANGES)
    more_changes: int


async def build(
    conn: Conn,
    project_id: str,
    today: dt.date,
    gap: int = health.DEFAULT_GAP,
    *,
    record: bool = True,
) -> Digest:
    rows = (await status_queries.load(conn, [project_id]))[project_id]
    position = await audit_queries.last_position(conn, project_id)
    if position is None:
        raise Rejected("not_found", f"project {project_id} is not known")
    previous = await conn.fetchrow(
        "SELECT position, created_at FROM digests WHERE project_id = $1 "
        "ORDER BY position DESC, created_at DESC LIMIT 1",
        project_id,
    )
    since = previous["position"] if previous else 0
    changed, total = await audit_queries.project_changes(conn, project_id, since, MAX_CHANGES)
    target = (await status_queries.targets(conn, [project_id]))[project_id]
    judged = health.judged(rows, today, gap, target)  # as the status shows them, gates too
    milestones = [sign_off.presented(r, j) for r, j in zip(rows, judged, strict=True)]
    digest = Digest(
        project_id=project_id,
        created_at=dt.datetime.now(dt.UTC),
        today=today,
        position=position,
        since_position=since,
        since=previous["created_at"] if previous else None,
        counts=dict(sorted(health.summary(milestones)["by_health"].items())),
        milestones=milestones,
        changes=[
            Change(
                position=c["position"],
                occurred_at=c["occurred_at"],
                type=c["type"],
                milestone_id=c["milestone_id"],
                actor=c["actor"],
                summary=describe(c["type"], c["payload"]),
            )
            for c in changed
        ],
        more_changes=max(0, total - MAX_CHANGES),
    )
    if record:
        await conn.execute(
            "INSERT INTO digests VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, position) "
            "DO UPDATE SET created_at = EXCLUDED.created_at, body = EXCLUDED.body",
            project_id,
            position,
            digest.created_at,
            msgspec.json.encode(digest),
        )
    return digest


async def send(
    conn: Conn, project_id: str, today: dt.date, gap: int = health.DEFAULT_GAP
) -> tuple[Digest, int]:
    """Build and record a digest and queue it for the project's (whole-project) subscribers."""
    async with conn.transaction():
        digest = await build(conn, project_id, today, gap)
        subs = [s for s in await subscriptions(conn, [project_id]) if s.scope == ""]
        body = msgspec.to_builtins(digest)
        items = [
            (
                Notification(
                    id=delivery_id(f"digest:{project_id}:{digest.created_at.isoformat()}", s),
                    kind="project.digest",
                    project_id=project_id,
                    stakeholder=s.stakeholder,
                    created_at=digest.created_at,
                    position=digest.position,
                    digest=body,
                    summary=summary(digest),
                ),
                s,
            )
            for s in subs
        ]
        return digest, await enqueue(conn, items)


async def send_due(pool: asyncpg.Pool, today: dt.date, gap: int, every: float) -> int:
    """Digests for the subscribed projects whose last digest is older than ``every`` seconds."""
    async with pool.acquire() as conn:
        subscribed = await status_queries.subscribed_projects(conn, whole_project_only=True)
        recent = {
            r["project_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT project_id FROM digests WHERE project_id = ANY($1::text[]) "
                "AND created_at > now() - make_interval(secs => $2)",
                subscribed,
                every,
            )
        }
        due = [p for p in subscribed if p not in recent]
        sent = 0
        for project_id in due:
            sent += (await send(conn, project_id, today, gap))[1]
        return sent


def summary(d: Digest) -> str:
    counts = ", ".join(f"{n} {h.replace('_', ' ')}" for h, n in d.counts.items()) or "no milestones"
    changes = len(d.changes) + d.more_changes
    return f"{d.project_id}: {counts}; {changes} change(s) since the last digest"


def render(d: dict[str, Any]) -> str:
    """A digest as text (the CLI)."""
    lines = [f"Digest of {d['project_id']} on {d['today']} (events up to position {d['position']})"]
    lines.append(
        "By health: " + (", ".join(f"{h} {n}" for h, n in d["counts"].items()) or "no milestones")
    )
    lines.append("")
    for m in d["milestones"]:
        lines.append(
            f"  [{m['health'].upper():>9}] {m['milestone_id']} {m['name']!r} due {m['due']}, "
            f"{m['progress']}% done: {m['health_reasons'][0]}"
        )
        if m.get("last_report"):
            r = m["last_report"]
            lines.append(
                f"              reported {r['health']} by {r.get('actor') or '?'}: {r['note']}"
            )
    since = f"since {d['since'][:16].replace('T', ' ')}" if d.get("since") else "since the start"
    lines += ["", f"Changes {since} ({len(d['changes']) + d['more_changes']}):"]
    lines += [
        f"  {c['occurred_at'][:10]} #{c['position']} {c['summary']}"
        + (f" ({c['actor']})" if c["actor"] else "")
        for c in d["changes"]
    ] or ["  none"]
    if d["more_changes"]:
        lines.append(
            f"  ... and {d['more_changes']} more "
            f"(see `milestones audit --project {d['project_id']}`)"
        )
    return "\n".join(lines)
