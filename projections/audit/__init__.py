"""Audit read models: every appended event (``audit``) and every inbox refusal (``rejections``)."""

from __future__ import annotations

import datetime as dt
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
    milestone_of,
)
from events.common import Event
from events.subjects import ALL_EVENTS, EVENTS_STREAM, REJECTIONS, REJECTIONS_STREAM
from projections.base import Audited, Batch, decode_event
from projections.storable import (
    INT_MAX,
    INT_MIN,
    TIME_MAX,
    TIME_MIN,
    integer,
    json_bytes,
    jsonb,
    maybe_text,
    text,
    timestamp,
)

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


_AUDITED = (ProjectEvent, MilestoneEvent)


def row(position: int, stored: StoredEvent) -> tuple:
    """The event's ``audit_events`` row (``COLUMNS``).

    Every step a rebuild takes for each of its events is written out here rather than called
    (``redacted``, ``attributes``, ``db.stored_time``, ``storable.integer`` each only where the
    quick look says it has something to do): 2.3 against 3.0 us per event of the benchmark's log
    (2026-12-07); ``tests/test_projection_speed.py`` checks it against those functions."""
    data = stored.data
    if not isinstance(data, _AUDITED):
        raise UnhandledEvent(type(data).__name__, "the audit projection")
    # what PostgreSQL refuses (a NUL, a time beyond year 9999 in UTC) is stored as it can be
    # held (``projections.storable``); the log keeps the event as it was appended
    subject, type_, id_, source = stored.subject, stored.type, stored.id, stored.source
    correlation, causation = stored.correlationid, stored.causationid
    actor, principal = stored.actor, stored.principal
    # one look at all the text for what PostgreSQL refuses (``text`` returns its argument when
    # there is nothing to replace), each field only when something is there
    joined = "\x01".join(
        (subject, type_, id_, source, correlation, causation, actor or "", principal or "")
    )
    if text(joined) is not joined:
        subject, type_, id_, source = text(subject), text(type_), text(id_), text(source)
        correlation, causation = text(correlation), text(causation)
        actor, principal = maybe_text(actor), maybe_text(principal)
    occurred, recorded, version = stored.time, stored.recordedtime, stored.schemaversion
    if occurred.tzinfo is not dt.UTC or not TIME_MIN <= occurred <= TIME_MAX:
        occurred = timestamp(occurred)  # as ``db.stored_time``
    if recorded.tzinfo is not dt.UTC or not TIME_MIN <= recorded <= TIME_MAX:
        recorded = timestamp(recorded)
    if not INT_MIN <= version <= INT_MAX:
        version = integer(version)
    shown_data = redacted(data) if isinstance(data, StakeholderSubscribed) else data
    shown = None  # most events have no attributes to show: ``attributes`` only for the others
    if (
        isinstance(stored, Audited)
        or stored.traceparent is not None
        or stored.tracestate is not None
        or stored.dataschema is not None
        or stored.sourcesubject is not None
    ):
        shown = attributes(stored)
    return (
        position,
        subject,
        data.project_id,
        milestone_of(data),
        type_,
        id_,
        actor,
        source,
        occurred,
        recorded,
        correlation,
        causation,
        version,
        json_bytes(ENCODER.encode(shown_data)),
        principal,
        None if shown is None else jsonb(shown),
    )


class AuditProjection:
    name = "audit"
    stream = EVENTS_STREAM
    subject = ALL_EVENTS
    tables = ("audit_events",)
    table_sql = (Path(__file__).parent / "schema.sql").read_text()
    index_sql = (Path(__file__).parent / "indexes.sql").read_text()  # secondary indexes
    schema_sql = table_sql + index_sql
    decode = staticmethod(decode_event)

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
