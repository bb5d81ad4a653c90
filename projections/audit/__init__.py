"""Audit read models: every appended event (``audit``) and every inbox refusal (``rejections``)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec

from events import (
    ENCODER,
    REJECTION_DECODER,
    MilestoneEvent,
    ProjectEvent,
    StakeholderSubscribed,
    StoredEvent,
    UnhandledEvent,
    decode_stored,
    milestone_of,
)
from events.attributes import stored_extensions
from events.common import Event
from events.subjects import ALL_EVENTS, EVENTS_STREAM, REJECTIONS, REJECTIONS_STREAM
from projections.base import Batch
from projections.storable import integer, json_bytes, jsonb, maybe_text, text, timestamp

COLUMNS = (
    "position",
    "subject",
    "project_id",
    "milestone_id",
    "type",
    "event_id",
    "actor",
    "source",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "schema_version",
    "payload",
    "principal",
    "attributes",
)


class Audited(StoredEvent, frozen=True, kw_only=True):
    """A stored event with the CloudEvent attributes it carries beyond ``StoredEvent``'s (the
    publisher's extension attributes, at the top level of the stored JSON)."""

    extensions: dict[str, object]


def decode_audited(body: bytes) -> StoredEvent:
    """The stored event, an ``Audited`` one when it carries extension attributes (rebuilt only
    then: most events carry none, and a rebuild decodes every event)."""
    stored = decode_stored(body)
    extensions = stored_extensions(body)
    if not extensions:
        return stored
    fields = {name: getattr(stored, name) for name in stored.__struct_fields__}
    return Audited(**fields, extensions=extensions)


def attributes(stored: StoredEvent) -> dict[str, object] | None:
    """The CloudEvent attributes that have no column of their own: the publisher's trace
    context, ``dataschema``, its ``subject`` (``sourcesubject``: ``subject`` is the aggregate's)
    and its extension attributes. None when there are none (and for events stored before)."""
    named = {
        "traceparent": stored.traceparent,
        "tracestate": stored.tracestate,
        "dataschema": stored.dataschema,
        "sourcesubject": stored.sourcesubject,
    }
    shown: dict[str, object] = {k: v for k, v in named.items() if v is not None}
    if isinstance(stored, Audited):
        shown |= stored.extensions
    return shown or None


def redacted(data: Event) -> Event:
    """What the audit trail shows of an event: webhook secrets are never shown."""
    if isinstance(data, StakeholderSubscribed) and data.secret is not None:
        return msgspec.structs.replace(data, secret=REDACTED)
    return data


REDACTED = "(redacted)" + "_" * 6  # still a valid Secret, so the payload keeps its contract


def row(position: int, stored: StoredEvent) -> tuple:
    data = stored.data
    if not isinstance(data, ProjectEvent | MilestoneEvent):
        raise UnhandledEvent(type(data).__name__, "the audit projection")
    # what PostgreSQL refuses (a NUL, a time beyond year 9999 in UTC) is stored as it can be
    # held (``projections.storable``); the log keeps the event as it was appended
    return (
        position,
        text(stored.subject),
        data.project_id,
        milestone_of(data),
        text(stored.type),
        text(stored.id),
        maybe_text(stored.actor),
        text(stored.source),
        timestamp(stored.time),
        timestamp(stored.recordedtime),
        text(stored.correlationid),
        text(stored.causationid),
        integer(stored.schemaversion),
        json_bytes(ENCODER.encode(redacted(data))),
        maybe_text(stored.principal),
        None if (shown := attributes(stored)) is None else jsonb(shown),
    )


class AuditProjection:
    name = "audit"
    stream = EVENTS_STREAM
    subject = ALL_EVENTS
    tables = ("audit_events",)
    schema_sql = (Path(__file__).parent / "schema.sql").read_text()
    decode = staticmethod(decode_audited)

    async def apply(self, conn: asyncpg.Connection, batch: Batch[StoredEvent], schema: str) -> None:
        await conn.copy_records_to_table(
            "audit_events",
            records=[row(p, e) for p, e in batch],
            columns=COLUMNS,
            schema_name=schema,
        )


class RejectionsProjection:
    name = "rejections"
    stream = REJECTIONS_STREAM
    subject = REJECTIONS
    tables = ("audit_rejections",)
    schema_sql = (Path(__file__).parent / "rejections.sql").read_text()
    decode = staticmethod(REJECTION_DECODER.decode)

    async def apply(self, conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
        records = [
            (
                p,
                r.inbox_seq,
                text(r.subject),
                timestamp(r.received),
                text(r.code),
                text(r.message),
                maybe_text(r.payload or r.payload_base64),
            )
            for p, r in batch
        ]
        await conn.copy_records_to_table(
            "audit_rejections",
            records=records,
            schema_name=schema,
            columns=(
                "position",
                "inbox_seq",
                "subject",
                "received_at",
                "code",
                "message",
                "payload",
            ),
        )
