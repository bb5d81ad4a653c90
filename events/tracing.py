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

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER = trace.get_tracer("milestones")
_W3C = TraceContextTextMapPropagator()
MAX_LINKS = 128  # a batch of thousands links to a sample; the SDK's own default limit is 128

Attributes = Mapping[str, str | int | float | bool | Sequence[str]]
_on = False


def enabled() -> bool:
    """Whether a process configured an SDK. Off, the callers skip even building attributes
    and links: tracing off costs a flag check (README, "Tracing")."""
    global _on
    if not _on:  # a provider is set once per process and never unset: remember a yes
        _on = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _on


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


class _Carried(msgspec.Struct):
    traceparent: str | None = None
    tracestate: str | None = None


_CARRIED = msgspec.json.Decoder(_Carried)


def context_in(stored: bytes) -> tuple[str | None, str | None]:
    """The ``(traceparent, tracestate)`` a stored event (JSON) carries, read on its own, so a
    consumer links to it whatever it decodes the event into; ``(None, None)`` when unreadable."""
    try:
        found = _CARRIED.decode(stored)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None, None  # whoever reads it for real says what is wrong with it
    return found.traceparent, found.tracestate


def current() -> tuple[str | None, str | None]:
    """The active span's ``(traceparent, tracestate)``, or ``(None, None)`` when not tracing."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def header_of(span: Span) -> tuple[str | None, str | None]:
    """``span``'s ``(traceparent, tracestate)``, or ``(None, None)`` for a non-recording one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate")


def traceparent_of(context: SpanContext) -> str | None:
    """The W3C ``traceparent`` of a span context (version 00), as the propagator writes it, or
    None for an invalid one. Written out: the propagator's ``inject`` makes a context and a
    carrier for each (the intake stamps every command it traces, sampled or not)."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def start(
    name: str,
    traceparent: str | None,
    tracestate: str | None = None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Attributes | None = None,
    links: Sequence[Link] = (),
) -> Span:
    """Like ``continued`` but not made current, for work whose spans overlap (the events of one
    batch, each continuing its own trace); the caller ends it. Off: the shared no-op span."""
    if not enabled():
        return INVALID_SPAN
    return TRACER.start_span(
        name,
        context=context_of(traceparent, tracestate),
        kind=kind,
        attributes=attributes,
        links=links,
    )


def links_to(spans: Iterable[SpanContext]) -> list[Link]:
    """Links to these span contexts, at most ``MAX_LINKS``: to those that were sampled (a link
    to a span that was never recorded leads nowhere, and with a ratio sampler most are not)."""
    out: list[Link] = []
    for context in spans:
        if len(out) >= MAX_LINKS:
            break
        if context.is_valid and context.trace_flags.sampled:
            out.append(Link(context))
    return out


@contextmanager
def continued(
    name: str,
    traceparent: str | None,
    tracestate: str | None = None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """A span that continues the event's trace (a child of its ``traceparent``); without one,
    a child of the current span (an HTTP request's), or a new trace."""
    if not enabled():
        yield INVALID_SPAN
        return
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
    if not enabled():  # off: the parents are not even iterated
        yield INVALID_SPAN
        return
    links: list[Link] = []
    for traceparent, tracestate in parents:
        if len(links) >= MAX_LINKS:
            break
        if (link := link_to(traceparent, tracestate)) is not None:
            links.append(link)
    with TRACER.start_as_current_span(name, kind=kind, links=links, attributes=attributes) as span:
        yield span
