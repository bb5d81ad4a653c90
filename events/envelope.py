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
CeMediaType = Annotated[str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=_LINE)]
CeUri = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, extra_json_schema=_LINE)]
CeSubject = Annotated[str, msgspec.Meta(min_length=1, max_length=512, extra_json_schema=_LINE)]
# W3C trace context: a version-00 traceparent is 55 characters; a tracestate of 512 is what
# the recommendation asks every platform to propagate.
CeTraceparent = Annotated[str, msgspec.Meta(min_length=1, max_length=128, extra_json_schema=_LINE)]
CeTracestate = Annotated[str, msgspec.Meta(max_length=512, extra_json_schema=_LINE)]


def _spec_1_0() -> str:
    return "1.0"


def _json() -> str:
    return "application/json"


class CloudEventIn(msgspec.Struct, kw_only=True, frozen=True):
    """A CloudEvents 1.0 event in structured JSON mode; ``data`` is decoded later by ``type``."""

    specversion: Literal["1.0"]
    id: CeId
    source: CeSource
    type: CeType
    time: Timestamp
    data: msgspec.Raw
    datacontenttype: CeMediaType | None = None  # JSON only (``events.attributes``)
    dataschema: CeUri | None = None
    subject: CeSubject | None = None
    actor: CeActor | None = None
    correlationid: CeId | None = None
    # the distributed-tracing extension (W3C trace context of the event's starting trace)
    traceparent: CeTraceparent | None = None
    tracestate: CeTracestate | None = None
    # Other extension attributes are not fields (the JSON Schema would list them): the intake
    # reads them beside this struct (``events.attributes.extensions_in``) and stores them.


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
    # A factory, not a default: ``omit_defaults`` leaves out a value equal to a plain default,
    # and a CloudEvent without ``specversion`` is not one. Events stored before this decode
    # with "1.0" (they were 1.0; their bytes are read as they are).
    specversion: str = msgspec.field(default_factory=_spec_1_0)
    datacontenttype: str = msgspec.field(default_factory=_json)
    dataschema: str | None = None  # the publisher's, on the events that carry its data
    # the publisher's W3C trace context (CloudEvents distributed-tracing extension), as sent
    traceparent: str | None = None
    tracestate: str | None = None
    # ``subject`` above is the aggregate's subject in the log; the CloudEvent ``subject`` the
    # publisher sent is kept here. Other extension attributes the publisher sent follow these
    # fields at the top level of the stored JSON (``events.attributes``).
    sourcesubject: str | None = None


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


class GeneratedSecret(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A webhook secret the intake generated for a ``StakeholderSubscribed`` (its ``secret``
    absent or ``"generate"``). ``secret`` is shown in the reply to the message that stored it and
    never again; otherwise ``note`` says why it is not shown."""

    id: str  # the CloudEvent's id
    secret: str | None = None  # "whsec_" + base64 of 32 random bytes (Standard Webhooks)
    note: str


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    accepted: bool
    events: list[EventRef] | None = None
    error: ErrorBody | None = None
    # subscriptions whose secret the intake generated (services.intake.webhooks)
    webhook_secrets: list[GeneratedSecret] | None = None

    @classmethod
    def ok(cls, events: list[EventRef]) -> Reply:
        return cls(accepted=True, events=events)

    @classmethod
    def fail(cls, code: str, message: str) -> Reply:
        return cls(accepted=False, error=ErrorBody(code, message))
