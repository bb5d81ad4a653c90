"""The transactional outbox: ``deliveries`` rows (one per notification and subscriber, with a
deterministic id, so a redelivered batch duplicates nothing)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from events import ENCODER
from projections.db import Conn
from projections.status import queries as status_queries

_NS = uuid.UUID("0b7e8f0c-3a8e-4d0f-9c55-6f1f4f8e2a10")


class Notification(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON body of every webhook POST."""

    id: str  # the delivery id, also the Idempotency-Key header
    kind: str
    project_id: str
    milestone_id: str | None = None
    stakeholder: str
    summary: str
    created_at: dt.datetime
    position: int | None = None  # the event's stream position
    event: dict[str, Any] | None = None  # type, id, time, actor, correlationid, data
    health: str | None = None
    reasons: list[str] | None = None
    digest: dict[str, Any] | None = None


class Subscription(msgspec.Struct, kw_only=True, frozen=True):
    project_id: str
    scope: str
    stakeholder: str
    url: str
    # sealed, as the event stored it; copied so into the outbox and opened only by the sender
    secret: str | None

    def __repr__(self) -> str:  # not even the sealed value in a log line or a traceback
        return f"Subscription({self.project_id!r}, {self.scope!r}, {self.stakeholder!r})"


def delivery_id(key: str, sub: Subscription) -> str:
    return str(
        uuid.uuid5(_NS, f"{key}\n{sub.project_id}\n{sub.scope}\n{sub.stakeholder}\n{sub.url}")
    )


async def subscriptions(conn: Conn, projects: Iterable[str]) -> list[Subscription]:
    return [Subscription(**r) for r in await status_queries.subscriptions(conn, projects)]


async def enqueue(conn: Conn, items: Sequence[tuple[Notification, Subscription]]) -> int:
    """Write deliveries; an id already there is a repeat and is skipped. Returns how many are
    new."""
    if not items:
        return 0
    rows = [
        (
            n.id,
            n.kind,
            n.project_id,
            n.milestone_id,
            s.stakeholder,
            s.url,
            s.secret,
            n.position,
            ENCODER.encode(n),
        )
        for n, s in items
    ]
    inserted = await conn.fetch(
        "INSERT INTO deliveries "
        "(id, kind, project_id, milestone_id, stakeholder, url, secret, position, body) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::text[], $8::bigint[], $9::bytea[]) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        *map(list, zip(*rows, strict=True)),
    )
    return len(inserted)
