"""The same queries over NATS request/reply: ``milestones.query.<name>`` with a JSON object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from faststream import Context
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage

from events import ENCODER, Reply
from events.errors import Rejected
from events.subjects import QUERIES
from services.query.queries import Queries


def register_queries(
    broker: NatsBroker,
    queries: Queries,
    stream_last: Callable[[], Awaitable[int]],
    workers: int = 64,
) -> None:
    handlers = {
        "milestone": queries.milestone,
        "milestones": queries.project_milestones,
        "history": queries.history,
        "audit": queries.audit,
        "rejections": queries.rejections,
        "parked": queries.parked,
        "report": queries.report,
        "trend": queries.trend,
        "projects": queries.projects,
        "status_reports": queries.status_reports,
        "subscriptions": queries.subscriptions,
        "digest": queries.digest,
        "deliveries": queries.deliveries,
        "retry_delivery": queries.retry_delivery,
    }

    @broker.subscriber(
        QUERIES,
        queue="milestones-query",
        max_workers=workers,
        title="milestones.query.<name>",
        description="Request/reply queries: milestone, milestones, history, audit, rejections, "
        "projections, parked, report, trend, projects, status_reports, subscriptions, digest (record, send), "
        "deliveries, retry_delivery. Body: a JSON object of the HTTP query parameters.",
    )
    async def on_query(msg: NatsMessage = Context("message")) -> bytes:
        name = msg.raw_message.subject.rsplit(".", 1)[-1]
        try:
            params = msgspec.json.decode(msg.body) if msg.body.strip() else {}
            if not isinstance(params, dict):
                raise Rejected("invalid", "the request body must be a JSON object of parameters")
            if name == "projections":
                return ENCODER.encode(await queries.projections(await stream_last()))
            handler = handlers.get(name)
            if handler is None:
                raise Rejected(
                    "unknown_type",
                    f"no query {name!r}: use one of {', '.join([*handlers, 'projections'])}",
                )
            return ENCODER.encode(await handler({k: v for k, v in params.items() if v is not None}))
        except msgspec.DecodeError as exc:
            return ENCODER.encode(Reply.fail("invalid", f"malformed JSON: {exc}"))
        except Rejected as exc:
            return ENCODER.encode(Reply.fail(exc.code, exc.message))
