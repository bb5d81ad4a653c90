"""The transactional outbox: ``deliveries`` rows (one per notification and subscriber, with a
deterministic id, so a redelivered batch duplicates nothing).

The body is made here, once, in the subscription's payload format, and stored with its content
type: every attempt sends the same bytes. ``milestones.v1`` (and subscriptions made before
payload versions, which have none) is the ``Notification`` as JSON, ``application/json``, as it
always was; ``cloudevents.v1`` is a CloudEvent 1.0 in structured JSON
(``application/cloudevents+json``) whose ``data`` is that same ``Notification``: ``id`` is the
delivery id (also ``webhook-id``), ``source`` ``/projects/<project_id>``, ``type``
``dev.milestones.<kind>``, ``subject`` the milestone, ``time`` when the event happened (when the
notification was made, for health and digests), and ``traceparent`` the event's trace context."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from events import ENCODER
from events.project import PAYLOAD_DEFAULT
from projections.db import Conn
from projections.status import queries as status_queries

_NS = uuid.UUID("0b7e8f0c-3a8e-4d0f-9c55-6f1f4f8e2a10")
TYPE_PREFIX = "dev.milestones."  # reverse-DNS, as the CloudEvents primer asks of ``type``
JSON = "application/json"
CLOUDEVENTS_JSON = "application/cloudevents+json"


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
    payload: str | None = None  # None: subscribed before payload versions (the legacy body)

    def __repr__(self) -> str:  # not even the sealed value in a log line or a traceback
        return f"Subscription({self.project_id!r}, {self.scope!r}, {self.stakeholder!r})"


class Queued(NamedTuple):
    """A notification for one subscriber, with the trace context of the event that caused it."""

    notification: Notification
    subscription: Subscription
    traceparent: str | None = None


class CloudEventOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    specversion: str
    id: str
    source: str
    type: str
    time: dt.datetime
    datacontenttype: str
    data: Notification
    subject: str | None = None
    traceparent: str | None = None


def body_of(n: Notification, payload: str | None, traceparent: str | None) -> tuple[bytes, str]:
    """The bytes every attempt sends, and their content type (module docstring)."""
    if payload != PAYLOAD_DEFAULT:
        return ENCODER.encode(n), JSON
    happened = n.event.get("time") if n.event else None
    ce = CloudEventOut(
        specversion="1.0",
        id=n.id,
        source=f"/projects/{n.project_id}",
        type=TYPE_PREFIX + n.kind,
        time=happened if isinstance(happened, dt.datetime) else n.created_at,
        datacontenttype=JSON,
        data=n,
        subject=n.milestone_id,
        traceparent=traceparent,
    )
    return ENCODER.encode(ce), CLOUDEVENTS_JSON


def delivery_id(key: str, sub: Subscription) -> str:
    return str(
        uuid.uuid5(_NS, f"{key}\n{sub.project_id}\n{sub.scope}\n{sub.stakeholder}\n{sub.url}")
    )


async def subscriptions(conn: Conn, projects: Iterable[str]) -> list[Subscription]:
    return [Subscription(**r) for r in await status_queries.subscriptions(conn, projects)]


async def enqueue(
    conn: Conn,
    items: Sequence[Queued | tuple[Notification, Subscription]],
) -> int:
    """Write deliveries; an id already there is a repeat and is skipped. Returns how many are
    new."""
    if not items:
        return 0
    rows = []
    for item in items:
        n, s, traceparent = item if isinstance(item, Queued) else Queued(*item)
        body, content_type = body_of(n, s.payload, traceparent)
        rows.append(
            (
                n.id,
                n.kind,
                n.project_id,
                n.milestone_id,
                s.stakeholder,
                s.url,
                s.secret,
                n.position,
                body,
                content_type,
                traceparent,
            )
        )
    inserted = await conn.fetch(
        "INSERT INTO deliveries (id, kind, project_id, milestone_id, stakeholder, url, secret, "
        "position, body, content_type, traceparent) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::text[], $8::bigint[], $9::bytea[], $10::text[], $11::text[]) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        *map(list, zip(*rows, strict=True)),
    )
    return len(inserted)
