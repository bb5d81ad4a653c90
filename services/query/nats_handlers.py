"""The queries over NATS request/reply, built from the registry: ``milestones.query.<name>`` with
a JSON object of the query's parameters; the reply is its JSON answer or the contract's error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import structlog
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from events import ENCODER, Reply
from events.errors import Rejected
from events.subjects import ALL_QUERIES, QUERY_PREFIX
from services.auth.principal import (
    NOBODY,
    SERVICE,
    UNKNOWN_CREDENTIAL,
    Authenticator,
    Principal,
    from_subject,
)
from services.query.queries import Queries
from services.query.registry import BY_NAME, Query

log = structlog.get_logger("milestones.query")


async def answer(
    queries: Queries,
    name: str,
    body: bytes,
    by_name: Mapping[str, Query[Any]] = BY_NAME,
    principal: Principal = SERVICE,
) -> bytes:
    """The reply to ``milestones.query.<name>`` with this body, for this principal."""
    query = by_name.get(name)
    try:
        if query is None:
            raise Rejected("unknown_type", f"no query {name!r}: use one of {', '.join(by_name)}")
        raw = msgspec.json.decode(body) if body.strip() else {}
        if not isinstance(raw, dict):
            raise Rejected("invalid", "the request body must be a JSON object of parameters")
        need = query.role_for(raw)
        if not principal.may(need):
            raise Rejected(
                "forbidden",
                f"query {name} needs the {need} role; {principal.id} is {principal.role}",
            )
        project = raw.get("project_id")
        if isinstance(project, str) and not principal.may_project(project):
            raise Rejected("forbidden", f"{principal.id} may not read project {project!r}")
        return ENCODER.encode(await query.answer(queries, raw))
    except msgspec.DecodeError as exc:
        return ENCODER.encode(Reply.fail("invalid", f"malformed JSON: {exc}"))
    except Rejected as exc:
        return ENCODER.encode(Reply.fail(exc.code, exc.message))
    except Exception as exc:  # a bug: answer so (HTTP says 500), never leave the caller waiting
        log.exception("query failed", query=name)
        return ENCODER.encode(
            Reply.fail("internal", f"query {name} failed ({type(exc).__name__}): see the logs")
        )


def listed(query: Query[Any]) -> str:
    """A query in the subscriber's description: its role, and the parameters only NATS takes."""
    only = f"; {', '.join(query.nats_only)}" if query.nats_only else ""
    return f"{query.name} ({query.role}{only})"


def register_queries(
    broker: NatsBroker, queries: Queries, auth: Authenticator = NOBODY, workers: int = 64
) -> None:
    @broker.subscriber(
        ALL_QUERIES,
        queue="milestones-query",
        max_workers=workers,
        title="milestones.query.<name>",
        description="Request/reply queries, one per name: "
        + "; ".join(map(listed, BY_NAME.values()))
        + ". Body: a JSON object of the query's parameters (as over HTTP); the reply is its "
        "JSON answer or the contract's error JSON.",
    )
    async def on_query(msg: NatsMessage) -> bytes:
        principal, name = from_subject(msg.raw_message.subject, QUERY_PREFIX, auth)
        if principal is None:
            return ENCODER.encode(Reply.fail("unauthenticated", UNKNOWN_CREDENTIAL))
        return await answer(queries, name, msg.body, principal=principal)
