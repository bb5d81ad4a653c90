"""The parameters of each query, typed and bounded: the NATS request body, the HTTP query string
and path, and the CLI's arguments are all read into these (``services.query.params.parse``)."""

from __future__ import annotations

from typing import Annotated, Any, get_args

import msgspec

from events.common import Id, MilestoneKind
from events.envelope import CeActor, CeId, CeSource
from services.domain.health import HEALTH
from services.notify.decision import ALL_KINDS
from services.query.params import (
    MAX_LIMIT,
    Cursor,
    Day,
    Limit,
    Moment,
    Params,
    Position,
    Text,
    bounded_text,
    choices,
)

SORTS = ("order", "due", "name")
Health = Annotated[str, choices(*HEALTH)]
Sort = Annotated[
    str,
    choices(*(f"{desc}{key}" for key in SORTS for desc in ("", "-"))),
    msgspec.Meta(description="'-' first for descending"),
]
DeliveryStatus = Annotated[str, choices("pending", "delivered", "failed")]
DeliveryKind = Annotated[str, choices(*ALL_KINDS)]


def longest(attribute: Any) -> int:
    """The length the contract allows a CloudEvent attribute (``events.envelope``)."""
    return int(get_args(attribute)[1].max_length)


# The audit filters match what the intake accepted, so they take values as long as it does.
Actor = Annotated[str, bounded_text(longest(CeActor))]
Source = Annotated[str, bounded_text(longest(CeSource))]
CorrelationId = Annotated[str, bounded_text(longest(CeId))]


class MilestoneParams(Params, kw_only=True, frozen=True):
    milestone_id: Id
    project_id: (
        Annotated[Id, msgspec.Meta(description="when the id is in several projects")] | None
    ) = None


class MilestonesParams(Params, kw_only=True, frozen=True):
    project_id: Id
    health: tuple[Health, ...] | None = None
    kind: tuple[MilestoneKind, ...] | None = None
    phase: Text | None = None
    due_from: Day | None = None
    due_to: Day | None = None
    sort: Sort = "order"
    limit: Limit = 100
    cursor: Cursor | None = None


class HistoryParams(Params, kw_only=True, frozen=True):
    milestone_id: Id
    project_id: Id | None = None
    limit: Limit = 100
    cursor: Cursor | None = None
    cursor_position: (
        Annotated[
            Position,
            msgspec.Meta(description="only changes appended after this position (and the cursor)"),
        ]
        | None
    ) = None


class AuditParams(Params, kw_only=True, frozen=True):
    project_id: Id | None = None
    milestone_id: Id | None = None
    actor: Actor | None = None
    principal: Actor | None = None  # who sent it (the credential), beside the self-declared actor
    source: Source | None = None
    type: Text | None = None
    occurred_from: Moment | None = msgspec.field(default=None, name="from")
    occurred_to: Moment | None = msgspec.field(default=None, name="to")
    correlation_id: CorrelationId | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class ReportParams(Params, kw_only=True, frozen=True):
    """The log is read directly, so every answer already includes the latest writes."""

    project_id: Id
    as_of: Annotated[Day, msgspec.Meta(description="as the project stood that day")] | None = None
    position: Annotated[Position, msgspec.Meta(description="as it stood then")] | None = None
    baseline: Text | None = None
    compare_as_of: Day | None = None
    compare_position: Position | None = None


class TrendParams(Params, kw_only=True, frozen=True):
    project_id: Id
    until: Annotated[Day, msgspec.Meta(description="the last report date")] | None = None


class ProjectsParams(Params, kw_only=True, frozen=True):
    project_id: Annotated[Id, msgspec.Meta(description="this project only")] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class ProjectParams(Params, kw_only=True, frozen=True):
    project_id: Id


class StatusReportsParams(Params, kw_only=True, frozen=True):
    project_id: Id
    milestone_id: Id | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class SubscriptionsParams(Params, kw_only=True, frozen=True):
    project_id: Id
    limit: Limit = MAX_LIMIT  # one page by default, as before paging: projects have few
    cursor: Cursor | None = None


class DigestSendParams(Params, kw_only=True, frozen=True):
    project_id: Id


class DigestParams(DigestSendParams, kw_only=True, frozen=True):
    """Over NATS the digest query also records (``record``) or sends (``send``) it; the HTTP GET
    route drops both and previews (``Query.nats_only``): there the POST route sends."""

    record: Annotated[bool, msgspec.Meta(description="keep it as the last digest")] = False
    send: Annotated[
        bool, msgspec.Meta(description="record it and queue it for the subscribers")
    ] = False


class DeliveriesParams(Params, kw_only=True, frozen=True):
    project_id: Id | None = None
    milestone_id: Id | None = None
    stakeholder: Text | None = None
    status: tuple[DeliveryStatus, ...] | None = None
    kind: tuple[DeliveryKind, ...] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class RetryDeliveryParams(Params, kw_only=True, frozen=True):
    id: Annotated[Id, msgspec.Meta(description="the delivery's id")]


class RejectionsParams(Params, kw_only=True, frozen=True):
    limit: Limit = 100
    cursor: Cursor | None = None


class ProjectionsParams(Params, kw_only=True, frozen=True):
    pass


class ParkedParams(Params, kw_only=True, frozen=True):
    projection: Id | None = None
