"""Tracing with the OpenTelemetry SDK: off unless the standard ``OTEL_*`` variables ask for it.

``Settings.traces`` (read from ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER`` and the OTLP
endpoint variables by ``services.app.settings``, the one module that reads the environment)
says whether and where to export. When it is ``none`` nothing here runs: no provider, no
exporter, no instrumentation, and the ``events.tracing`` helpers stay the API's no-ops.

When it is on, the SDK and its OTLP/HTTP exporter read their own ``OTEL_*`` variables, as they
do in every language (endpoint, headers, timeout, batch sizes, sampler, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``): that is the standard's contract with operators, so it is left to
the SDK rather than re-read here. The service kind only supplies a default ``service.name``.

Instrumented when on: asyncpg (every query a client span), httpx (the webhook sender's POSTs)
and the HTTP API (``asgi``: a server span per request, continuing a ``traceparent`` header).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

log = structlog.get_logger("milestones.telemetry")

# Probes and scrapes every few seconds would bury the traces that matter.
UNTRACED_URLS = "/health,/ready,/metrics"


@dataclass
class Telemetry:
    provider: TracerProvider
    exporters: list[str]

    def instrument_asgi(self, app):  # -> an ASGI app
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        # no span per chunk sent or received: a dashboard's live stream would make thousands
        return OpenTelemetryMiddleware(
            app,
            excluded_urls=UNTRACED_URLS,
            tracer_provider=self.provider,
            exclude_spans=["receive", "send"],
        )

    async def stop(self, timeout: float) -> None:
        """Export what is left, within ``timeout``: a collector that does not answer must not
        hold the process (the SDK's own timeouts are 10 and 30 s)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def close() -> None:
            try:
                self.provider.force_flush(int(timeout * 1000))
                self.provider.shutdown()
            except Exception as exc:  # noqa: BLE001 - exporting is best effort at exit
                log.warning("traces not flushed", error=repr(exc))
            finally:
                try:
                    loop.call_soon_threadsafe(finished)
                except RuntimeError:  # the loop is gone: nobody waits any more
                    pass

        # a daemon thread, not the loop's executor: an abandoned export must not block exit
        threading.Thread(target=close, name="otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            log.warning("traces not flushed in time: abandoned", after_s=timeout)


_started: Telemetry | None = None


def start(traces: str, service: str) -> Telemetry | None:
    """Configure the SDK for ``traces`` (``none``, ``otlp``, ``console`` or both, comma
    separated; see ``settings.traces_from``) once per process; None when off."""
    global _started
    if traces == "none":
        return None
    if _started is not None:  # a second start in one process (tests): the first one stands
        return _started
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, if set
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    names = [n for n in traces.split(",") if n]
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _instrument_clients(provider)
    _started = Telemetry(provider, names)
    log.info(
        "tracing on",
        exporters=names,
        service_name=resource.attributes.get(SERVICE_NAME),
    )
    return _started


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*


def _instrument_clients(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
