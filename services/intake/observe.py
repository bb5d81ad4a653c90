"""What the intake tells an operator about each command: its span, its log fields, the gauge
of commands awaiting a verdict.

A command's span continues the CloudEvent's ``traceparent`` (the CloudEvents distributed-tracing
extension) and follows the OpenTelemetry semantic conventions for CloudEvents and messaging; a
commit round's span links to the commands it carries (``services.intake.committer``). When the
event came without a ``traceparent`` and tracing is on, the stored event gets the intake span's,
so that a projection apply or a webhook delivery links back to where the event entered. A
publisher's own ``traceparent`` is stored unchanged.

The entry point (``IntakeService.handle``) knows the transport, the committer knows the parsed
CloudEvents; ``CALL`` carries one to the other within the caller's task, so that the refusal the
entry point logs names the CloudEvent too, whatever the content mode it arrived in.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import msgspec
from opentelemetry.trace import Span, SpanContext, SpanKind, StatusCode
from prometheus_client import Gauge

from events import Reply, tracing
from events.envelope import CloudEventIn
from events.subjects import COMMANDS_PREFIX, INBOX_PREFIX
from services.intake.round import Command

IN_FLIGHT = Gauge(
    "milestones_intake_in_flight", "CloudEvents submitted to the committer and awaiting a verdict"
)

_NATS_PREFIX = {"commands": COMMANDS_PREFIX, "inbox": INBOX_PREFIX}
_SERVER_SIDE = {"unavailable", "conflict", "internal"}  # refusals that are the service's trouble
GONE = Reply.fail("unavailable", "the caller went away before the verdict")  # (cancelled)


@dataclass(slots=True)
class Call:
    """One message at the entry point: how it came, and (filled in by the committer) which
    CloudEvents it held, as log fields."""

    path: str  # commands | inbox | http | demo ...
    type_token: str | None = None
    commands: Sequence[Command] = ()
    span: SpanContext | None = None  # the command's own, when it is one and tracing is on

    def about(self) -> dict[str, object]:
        """The log fields of a refusal, made only when one is logged (not on the hot path)."""
        if not self.commands:
            return {}
        fields = about(self.commands)
        if self.span is not None:
            fields["trace_id"] = format(self.span.trace_id, "032x")
            fields["span_id"] = format(self.span.span_id, "016x")
        return fields


CALL: ContextVar[Call | None] = ContextVar("milestones_intake_call", default=None)


def about(commands: Sequence[Command]) -> dict[str, object]:
    """Log fields naming the CloudEvents (a batch: lists, in order)."""
    if len(commands) == 1:
        ce = commands[0].ce
        return {"ce_id": ce.id, "ce_source": ce.source, "correlationid": ce.correlationid or ce.id}
    sources = sorted({c.ce.source for c in commands})
    return {
        "ce_id": [c.ce.id for c in commands],
        "ce_source": sources[0] if len(sources) == 1 else sources,
        "correlationid": [c.ce.correlationid or c.ce.id for c in commands],
    }


class _Peek(msgspec.Struct):
    id: str | None = None
    source: str | None = None
    correlationid: str | None = None


_PEEK = msgspec.json.Decoder(_Peek | list[_Peek])


def peek(body: bytes, headers: dict[str, str] | None = None) -> dict[str, object]:
    """The log fields of a message that was refused before it was parsed (best effort: what is
    there and readable; binary mode keeps its attributes in ``ce-`` headers)."""
    if headers and headers.get("ce-id"):
        named = (
            ("ce_id", "ce-id"),
            ("ce_source", "ce-source"),
            ("correlationid", "ce-correlationid"),
        )
        return {field: headers[name] for field, name in named if headers.get(name)}
    try:
        found = _PEEK.decode(body)
    # not JSON, not a CloudEvent, nested too deep, not UTF-8: no fields (the refusal says why)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return {}
    if isinstance(found, list):
        return {"ce_id": [p.id for p in found[:100]]} if found else {}
    fields = {"ce_id": found.id, "ce_source": found.source, "correlationid": found.correlationid}
    return {k: v for k, v in fields.items() if v is not None}


def command_spans(commands: Sequence[Command]) -> list[Span]:
    """One span per command, continuing its CloudEvent's trace (tracing on only). Its
    attributes are set once the sampler has said it records: with a ratio sampler most spans
    are not recorded, and building their attributes was a third of what tracing cost them."""
    call = CALL.get()
    spans = []
    for command in commands:
        ce = command.ce
        span = tracing.start(
            f"CloudEvents Process {ce.type}",
            getattr(ce, "traceparent", None),
            getattr(ce, "tracestate", None),
            kind=SpanKind.CONSUMER,
        )
        if span.is_recording():
            span.set_attributes(_attributes(ce, call))
        spans.append(span)
    return spans


def _attributes(ce: CloudEventIn, call: Call | None) -> dict[str, str]:
    attributes: dict[str, str] = {
        "cloudevents.event_id": ce.id,
        "cloudevents.event_source": ce.source,
        "cloudevents.event_type": ce.type,
        "cloudevents.event_spec_version": ce.specversion,
        "messaging.operation.type": "process",
        "milestones.intake.path": call.path if call else "internal",
    }
    if ce.subject:
        attributes["cloudevents.event_subject"] = ce.subject
    if call is not None and (prefix := _NATS_PREFIX.get(call.path)):
        attributes["messaging.system"] = "nats"
        attributes["messaging.destination.name"] = f"{prefix}.{call.type_token or ce.type}"
    return attributes


def stamped(command: Command, span: Span) -> Command:
    """The command whose stored events will carry a trace context: the publisher's unchanged,
    or (when it sent none) the intake span's, so that later work links to this span. A span
    the sampler did not record is stamped too (its ``traceparent`` says so), so that what
    continues the trace later makes the same decision, as W3C trace context intends."""
    ce = command.ce
    if getattr(ce, "traceparent", None) or "traceparent" not in ce.__struct_fields__:
        return command
    traceparent = tracing.traceparent_of(span.get_span_context())
    if traceparent is None:
        return command
    replaced = msgspec.structs.replace(ce, traceparent=traceparent)
    return Command(replaced, command.fact, command.principal, command.extensions)


def verdict(spans: Sequence[Span], reply: Reply) -> None:
    for span in spans:
        if not span.is_recording():
            continue  # nothing to set, nothing to end: the sampler dropped it
        span.set_attribute("milestones.accepted", reply.accepted)
        if reply.error is not None:
            span.set_attribute("error.type", reply.error.code)
            if reply.error.code in _SERVER_SIDE:
                span.set_status(StatusCode.ERROR, reply.error.message)
        span.end()
