"""The stored form of a decided event: a CloudEvent 1.0 (structured JSON) that keeps what the
publisher's CloudEvent said about context (trace context, its subject, its extension
attributes) beside what Milestones adds (who sent it, when it was recorded, why it happened).

Pure: the commit round (``services.intake.round``) calls it with the time and ids it was given.
"""

from __future__ import annotations

import datetime as dt

from events import ENCODER, StoredEvent
from events.attributes import Extensions, with_extensions
from events.common import Event
from events.envelope import CloudEventIn


def stored_bytes(
    ce: CloudEventIn,
    extensions: Extensions,
    event: Event,
    *,
    event_id: str,
    subject: str,
    recorded: dt.datetime,
    causation: str,
    principal: str,
    direct: bool,
) -> bytes:
    """One event of a command as the log stores it. ``direct``: the CloudEvent itself stated
    this event (not derived from it), so the publisher's ``dataschema`` describes its data.
    The trace context, the publisher's subject and its extension attributes go with every
    event the CloudEvent produced: they say where it came from, whatever was derived."""
    stored = StoredEvent(
        id=event_id,
        source=ce.source,
        type=type(event).__name__,
        subject=subject,
        time=ce.time,
        recordedtime=recorded,
        correlationid=ce.correlationid or ce.id,
        causationid=causation,
        actor=ce.actor,
        principal=principal,
        data=event,
        dataschema=ce.dataschema if direct else None,
        traceparent=ce.traceparent,
        tracestate=ce.tracestate,
        sourcesubject=ce.subject,
    )
    return with_extensions(ENCODER.encode(stored), extensions)
