"""OpenTelemetry traces (issue 14, point 6), against a real OTLP/HTTP receiver: the service
processes export with the SDK's OTLP exporter when the standard ``OTEL_*`` variables say so,
and the test decodes what arrives with opentelemetry-proto's ``ExportTraceServiceRequest``.

The intake's span continues a CloudEvent's ``traceparent`` (same trace, the publisher's span as
parent); the stored event keeps that ``traceparent`` unchanged, or carries the intake span's
when the publisher sent none; the commit round and each projection's apply link to them; HTTP
requests and asyncpg queries have their spans. With tracing off (nothing set, ``none``, or
``OTEL_SDK_DISABLED``) no exporter exists and nothing is sent."""

from __future__ import annotations

import asyncio
import http.server
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from events.subjects import EVENTS_STREAM
from services.app.embedded import EmbeddedNats, free_port
from services.app.settings import Settings, traces_from
from services.app.telemetry import start
from tests.conftest import cloudevent, request, wait_for
from tests.ops_support import BOUND, MARGIN, Service, service_env, tokens, true

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # the OTLP span kinds


@dataclass
class Span:
    service: str
    resource: dict[str, object]
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, object]
    links: list[tuple[str, str]]


def _value(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf body, as a collector
    listening on 4318 takes it."""

    port: int = field(default_factory=free_port)
    spans: list[Span] = field(default_factory=list)
    posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(
                        Span(
                            service=str(resource.get("service.name")),
                            resource=resource,
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                        )
                    )
        with self.lock:
            self.posts += 1
            self.spans.extend(found)

    def named(self, name: str, service: str | None = None) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name and service in (None, s.service)]


@pytest.fixture
def collector() -> Iterator[Collector]:
    sink = Collector()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-encoding"):
                self.send_response(400)
                self.end_headers()
                return
            sink.received(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", sink.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.kill()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def _stored(nc, subject: str) -> dict:
    msg = await nc.jetstream().get_last_msg(EVENTS_STREAM, subject)
    return msgspec.json.decode(msg.data)


async def test_spans_continue_the_cloudevent_trace_and_the_read_side_links_to_it(
    settings: Settings,
    nats_server: EmbeddedNats,
    db_url: str,
    tmp_path: Path,
    nc,
    collector: Collector,
    services: list[Service],
):
    token = await tokens(nats_server)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    env = service_env(settings, tmp_path, MILESTONES_DATABASE_URL=db_url, **otel)
    intake = Service.start("intake", ["serve", "intake"], env, tmp_path)
    services.append(intake)
    api = f"http://127.0.0.1:{env['MILESTONES_HTTP_PORT']}"
    env = service_env(
        settings,
        tmp_path,
        MILESTONES_DATABASE_URL=db_url,
        OTEL_SERVICE_NAME="read-side",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=tests",
        **otel,
    )
    projections = Service.start("projections", ["serve", "projections"], env, tmp_path)
    services.append(projections)
    await intake.ready_is(200, 90)
    await projections.ready_is(200, 90)

    # 1. over NATS, with the publisher's trace context in the CloudEvent
    traceparent, trace_id, parent = _traceparent()
    created = cloudevent(
        "ProjectCreated", {"project_id": "traced", "name": "T"}, traceparent=traceparent
    )
    assert (await request(nc, created)).accepted
    # 2. over HTTP, none in the CloudEvent, one in the request's headers
    http_traceparent, http_trace, http_parent = _traceparent()
    planned = cloudevent(
        "MilestonePlanned",
        {"project_id": "traced", "milestone_id": "m1", "name": "M", "kind": "event"}
        | {"due": "2026-12-01"},
    )
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{api}/events",
            content=msgspec.json.encode(planned),
            headers={
                "Authorization": f"Bearer {token['publisher']}",
                "Content-Type": "application/cloudevents+json",
                "traceparent": http_traceparent,
            },
        )
        assert answer.is_success and answer.json()["accepted"] is True, answer.text
        assert (await http.get(f"{api}/ready")).status_code == 200  # not traced

    async def exported() -> bool:
        return bool(
            collector.named("CloudEvents Process ProjectCreated")
            and collector.named("CloudEvents Process MilestonePlanned")
            and len(collector.named("send MILESTONES")) >= 2
            and _links(collector.named("project status"))
            >= {(trace_id, parent), _id(collector.named("CloudEvents Process MilestonePlanned"))}
        )

    await wait_for(exported, 30, "the intake's and the projections' spans")

    # the intake continues the publisher's trace: same trace, the publisher's span as parent
    [nats_span] = collector.named("CloudEvents Process ProjectCreated")
    assert (nats_span.trace_id, nats_span.parent) == (trace_id, parent)
    assert nats_span.service == "milestones-intake" and nats_span.kind == CONSUMER
    assert (
        nats_span.attributes.items()
        >= {
            "cloudevents.event_id": created["id"],
            "cloudevents.event_source": "tests",
            "cloudevents.event_type": "ProjectCreated",
            "cloudevents.event_spec_version": "1.0",
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": "milestones.commands.ProjectCreated",
            "milestones.accepted": True,
        }.items()
    )
    # ... and the stored event keeps the publisher's traceparent unchanged
    assert (await _stored(nc, "milestones.events.traced"))["traceparent"] == traceparent

    # over HTTP: the server span continues the header's trace, the intake span is its child
    [server] = [
        s for s in collector.named("POST /events", "milestones-intake") if s.trace_id == http_trace
    ]
    assert server.kind == SERVER and server.parent == http_parent
    [http_span] = collector.named("CloudEvents Process MilestonePlanned")
    assert (http_span.trace_id, http_span.parent) == (http_trace, server.span_id)
    assert "messaging.system" not in http_span.attributes  # HTTP, not a messaging system
    # no traceparent in the event: the stored event carries the intake span's
    stored = await _stored(nc, "milestones.events.traced.m1")
    assert stored["traceparent"] == f"00-{http_trace}-{http_span.span_id}-01"
    with collector.lock:
        assert not [s for s in collector.spans if s.attributes.get("http.route") == "/ready"]

    # each commit round links to the commands it carried
    rounds = collector.named("send MILESTONES", "milestones-intake")
    assert all(r.kind == PRODUCER for r in rounds)
    assert {_id([nats_span]), _id([http_span])} <= _links(rounds)

    # each projection's apply is a span linked to the events' trace contexts
    applies = collector.named("project status", "read-side")
    assert applies and all(a.kind == CONSUMER for a in applies)
    assert {(trace_id, parent), _id([http_span])} <= _links(applies)
    assert applies[0].resource["deployment.environment.name"] == "tests"  # OTEL_* honoured
    assert {(trace_id, parent)} <= _links(collector.named("project history", "read-side"))
    # asyncpg: the queries of an apply are its children
    with collector.lock:
        queries = [s for s in collector.spans if s.kind == CLIENT and s.service == "read-side"]
    assert queries and any(k.startswith("db.") for k in queries[0].attributes)
    assert {q.parent for q in queries} & {a.span_id for a in applies}


def _id(spans: list[Span]) -> tuple[str, str]:
    return (spans[0].trace_id, spans[0].span_id) if spans else ("", "")


def _links(spans: list[Span]) -> set[tuple[str, str]]:
    return {link for s in spans for link in s.links}


@pytest.mark.parametrize(
    "switch",
    [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}],
    ids=["sdk disabled", "exporter none"],
)
async def test_tracing_off_creates_no_exporter_and_sends_nothing(
    settings: Settings,
    tmp_path: Path,
    nc,
    collector: Collector,
    services: list[Service],
    switch: dict[str, str],
):
    env = service_env(settings, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, **switch)
    intake = Service.start("intake", ["serve", "intake"], env, tmp_path)
    services.append(intake)
    await intake.ready_is(200, 90)
    traceparent, _, _ = _traceparent()
    ce = cloudevent("ProjectCreated", {"project_id": "dark", "name": "D"}, traceparent=traceparent)
    assert (await request(nc, ce)).accepted
    assert await intake.terminate() == 0  # an SDK would flush what it holds now
    assert collector.posts == 0 and collector.spans == []
    assert not any(e.get("event") == "tracing on" for e in intake.events())
    # the publisher's trace context is stored all the same
    assert (await _stored(nc, "milestones.events.dark"))["traceparent"] == traceparent


async def test_a_command_the_sampler_drops_is_stamped_unsampled_and_costs_no_span(
    settings: Settings,
    tmp_path: Path,
    nc,
    collector: Collector,
    services: list[Service],
):
    """With a ratio sampler most commands are not recorded (issue 18: tracing's cost is
    mostly theirs). Such a command exports nothing, and its stored event still carries its
    trace context, marked not sampled, so that what continues the trace later decides alike
    (W3C trace context)."""
    env = service_env(
        settings,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",  # nothing that starts a trace here is sampled
    )
    intake = Service.start("intake", ["serve", "intake"], env, tmp_path)
    services.append(intake)
    await intake.ready_is(200, 90)
    ce = cloudevent("ProjectCreated", {"project_id": "unsampled", "name": "U"})
    assert (await request(nc, ce)).accepted
    # a publisher's sampled trace is still followed (parent-based)
    traceparent, trace_id, parent = _traceparent()
    followed = cloudevent(
        "ProjectCreated", {"project_id": "followed", "name": "F"}, traceparent=traceparent
    )
    assert (await request(nc, followed)).accepted
    stored = (await _stored(nc, "milestones.events.unsampled"))["traceparent"]
    version, stamped_trace, stamped_span, flags = stored.split("-")
    assert (version, len(stamped_trace), len(stamped_span)) == ("00", 32, 16)
    assert int(flags, 16) & 1 == 0  # the sampled flag is not set (the SDK may set "random")
    assert (await _stored(nc, "milestones.events.followed"))["traceparent"] == traceparent
    assert await intake.terminate() == 0  # the SDK flushes what it holds
    processed = collector.named("CloudEvents Process ProjectCreated")
    assert [(s.trace_id, s.parent) for s in processed] == [(trace_id, parent)]


def test_a_traceparent_written_out_is_the_propagators_and_links_go_to_sampled_spans():
    from opentelemetry import trace as api
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from events import tracing

    contexts = [
        SpanContext(
            int(secrets.token_hex(16), 16), int(secrets.token_hex(8), 16), False, TraceFlags(flags)
        )
        for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT, 0x02, 0x03)
    ]
    for context in contexts:
        span = NonRecordingSpan(context)
        assert tracing.traceparent_of(context) == tracing.header_of(span)[0] is not None
    assert tracing.traceparent_of(api.INVALID_SPAN_CONTEXT) is None
    # a commit round links to the commands the sampler kept, not to spans never recorded
    linked = [link.context for link in tracing.links_to([*contexts, api.INVALID_SPAN_CONTEXT])]
    assert linked == [contexts[0], contexts[3]]


@pytest.mark.parametrize(
    ("env", "traces"),
    [
        ({}, "none"),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, "otlp,console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, "none"),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, "none"),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, "otlp"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "otlp",
        ),
    ],
)
def test_tracing_is_configured_by_the_standard_variables_only(env: dict, traces: str):
    assert traces_from(env) == traces
    assert Settings.from_env(env).traces == traces
    assert Settings.from_env({"MILESTONES_TRACES": "otlp"}).traces == "none"  # not a setting
    if traces == "none":
        assert start(traces, "milestones-intake") is None  # no provider, no exporter


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "names jaeger: this build exports traces with otlp"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "sends OTLP over HTTP only; set it to http/protobuf",
        ),
    ],
)
def test_a_tracing_configuration_this_build_cannot_serve_is_refused_with_what_to_fix(
    env: dict, says: str
):
    with pytest.raises(ValueError, match=says):
        Settings.from_env(env)


async def test_a_collector_that_does_not_answer_does_not_hold_the_shutdown(
    settings: Settings, tmp_path: Path, nc, services: list[Service]
):
    """Spans waiting for a collector that accepts connections and never answers: SIGTERM still
    ends the intake within the shutdown bound, with exit code 0."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answered

    blackhole = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = blackhole.sockets[0].getsockname()[1]
    try:
        env = service_env(
            settings,
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_BSP_SCHEDULE_DELAY="50",
        )
        intake = Service.start("intake", ["serve", "intake"], env, tmp_path)
        services.append(intake)
        await intake.ready_is(200, 90)
        ce = cloudevent("ProjectCreated", {"project_id": "held", "name": "H"})
        assert (await request(nc, ce)).accepted
        await wait_for(lambda: true(bool(held)), 20, "an export to the collector")
        assert await intake.terminate() == 0, intake.log.read_text()[-3000:]
        assert (intake.stopped_in or 0) < BOUND + MARGIN, intake.stopped_in
        assert any(e.get("event") == "tracing on" for e in intake.events())
    finally:
        for writer in held:
            writer.close()
        blackhole.close()
        await blackhole.wait_closed()
