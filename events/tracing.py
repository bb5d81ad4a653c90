"""W3C trace context on events: the CloudEvents distributed-tracing extension (``traceparent``,
``tracestate``) and the spans that continue it or link to it.

Only the OpenTelemetry *API* is used here, as libraries do: until a process configures the SDK
(``services.app.telemetry``, off unless ``OTEL_*`` says otherwise) every call below is a cheap
no-op, so the intake, the runners and the sender can call it unconditionally. It lives in the
contract package because the trace context travels *with* the event: the intake continues the
publisher's trace, the stored event keeps it, and whatever later acts on the event (a projection
apply, a webhook delivery) links its own span to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER = trace.get_tracer("milestones")
_W3C = TraceContextTextMapPropagator()
MAX_LINKS = 128  # a batch of thousands links to a sample; the SDK's own default limit is 128

Attributes = Mapping[str, str | int | float | bool]


def context_of(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The remote context a ``traceparent`` names, or None when absent or malformed (a bad
    header never fails a message: the span then starts a new trace)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _W3C.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def link_to(traceparent: str | None, tracestate: str | None = None) -> Link | None:
    ctx = context_of(traceparent, tracestate)
    return None if ctx is None else Link(trace.get_current_span(ctx).get_span_context())


def current() -> tuple[str | None, str | None]:
    """The active span's ``(traceparent, tracestate)``, or ``(None, None)`` when not tracing."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


@contextmanager
def continued(
    name: str,
    traceparent: str | None,
    tracestate: str | None = None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """A span that continues the event's trace (a child of its ``traceparent``), or a new trace
    when it has none."""
    with TRACER.start_as_current_span(
        name, context=context_of(traceparent, tracestate), kind=kind, attributes=attributes
    ) as span:
        yield span


@contextmanager
def linked(
    name: str,
    parents: Iterable[tuple[str | None, str | None]],
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """A span for work on many events at once (a projection batch, a delivery): its own trace,
    *linked* to each event's ``(traceparent, tracestate)`` (at most ``MAX_LINKS``)."""
    links: list[Link] = []
    for traceparent, tracestate in parents:
        if len(links) >= MAX_LINKS:
            break
        if (link := link_to(traceparent, tracestate)) is not None:
            links.append(link)
    with TRACER.start_as_current_span(name, kind=kind, links=links, attributes=attributes) as span:
        yield span
