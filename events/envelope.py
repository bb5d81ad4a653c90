"""Envelopes: the CloudEvent that arrives, the CloudEvent that is stored, and the reply.

The stored form is itself a CloudEvent (structured JSON) with extension attributes, so the
event log, the audit export and the inbound contract speak one format.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from events.bounds import LINE_PATTERN
from events.common import Timestamp

# No control characters (events.bounds): checked by the intake, shown in the JSON Schema.
_LINE = {"pattern": LINE_PATTERN}
CeId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=_LINE)]
CeSource = Annotated[str, msgspec.Meta(min_length=1, max_length=512, extra_json_schema=_LINE)]
CeType = Annotated[str, msgspec.Meta(min_length=1, max_length=128, extra_json_schema=_LINE)]
CeActor = Annotated[str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=_LINE)]
CeText = Annotated[str, msgspec.Meta(extra_json_schema=_LINE)]


class CloudEventIn(msgspec.Struct, kw_only=True, frozen=True):
    """A CloudEvents 1.0 event in structured JSON mode; ``data`` is decoded later by ``type``."""

    specversion: Literal["1.0"]
    id: CeId
    source: CeSource
    type: CeType
    time: Timestamp
    data: msgspec.Raw
    datacontenttype: CeText | None = None
    subject: CeText | None = None
    actor: CeActor | None = None
    correlationid: CeId | None = None


class StoredEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One event as stored in the log. Its position is the JetStream stream sequence."""

    id: str
    source: str
    type: str
    subject: str
    time: dt.datetime
    recordedtime: dt.datetime
    correlationid: str
    causationid: str
    data: object  # an ``events.AnyEvent``; decode with ``events.decode_stored``
    actor: str | None = None  # self-declared by the publisher
    principal: str | None = None  # who sent it, as the transport authenticated it
    schemaversion: int = 1
    specversion: str = "1.0"
    datacontenttype: str = "application/json"


class EventRef(msgspec.Struct, frozen=True):
    type: str
    id: str
    position: int


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """Written atomically with a command's events: proof that this CloudEvent was handled."""

    source: str
    id: str
    type: str
    events: list[tuple[str, str]]  # (type, event id); positions follow the receipt's own


class Rejection(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """An inbox message the intake refused, recorded on ``MILESTONES_REJECTIONS`` with why."""

    inbox_seq: int
    subject: str
    received: dt.datetime
    code: str
    message: str
    payload: str | None = None
    payload_base64: str | None = None
    deliveries: int | None = None  # how often the inbox delivered it (retries after an error)


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    message: str


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    accepted: bool
    events: list[EventRef] | None = None
    error: ErrorBody | None = None

    @classmethod
    def ok(cls, events: list[EventRef]) -> Reply:
        return cls(accepted=True, events=events)

    @classmethod
    def fail(cls, code: str, message: str) -> Reply:
        return cls(accepted=False, error=ErrorBody(code, message))
