"""Field types shared by every event contract.

Constraints live in the types (msgspec ``Meta``) so that validation, error messages and the
exported JSON Schema all come from one place. The intake's value bounds (``events.bounds``) are
the exception: stored events must decode whatever they hold, so the types only carry those
bounds into the JSON Schema, and the intake checks them in a step of its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from events.bounds import (
    CONTROL_FREE,
    DATE_RULE,
    INT_MAX,
    INT_MIN,
    LAG_MAX,
    LAG_MIN,
    LINE_PATTERN,
    MULTILINE,
    MULTILINE_PATTERN,
    TEXT,
    TIME_RULE,
    TIME_YEAR_PATTERN,
    URL_PATTERN,
    YEAR_PATTERN,
)

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Id = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN,
        description="1-64 characters of A-Z, a-z, 0-9, '_' or '-' (ids become NATS subject tokens)",
        extra={TEXT: CONTROL_FREE},  # the pattern refuses control characters already
    ),
]
# Intake bounds (events.bounds) ride on the types as ``extra_json_schema`` (shown in the exported
# JSON Schema, never validated on decode, so stored events stay lenient) and ``extra`` markers.
_LINE = {"pattern": LINE_PATTERN}
_MULTILINE = {"pattern": MULTILINE_PATTERN}
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, extra_json_schema=_LINE)]
# A principal's name as people know it: a Milestones credential's ``name`` or an identity
# provider user's ``sub`` (approvers of a gate are named this way).
ApproverName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        description="a principal's name: a credential's name, or an identity provider's sub",
        extra_json_schema=_LINE,
    ),
]
Text = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=2000, extra_json_schema=_MULTILINE, extra={TEXT: MULTILINE}
    ),
]
Reason = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2000,
        description="why: required, not empty",
        extra_json_schema=_MULTILINE,
        extra={TEXT: MULTILINE},
    ),
]
Url = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^https?://\S{1,2000}$",
        max_length=2048,
        # msgspec shows its own pattern in the schema; services.app.schema_export puts this one
        extra_json_schema={"pattern": URL_PATTERN},
    ),
]
Secret = Annotated[
    str,
    msgspec.Meta(
        min_length=16,
        max_length=256,
        description="webhook signing key: 16-256 characters",
        extra_json_schema=_LINE,
    ),
]
Date = Annotated[
    dt.date,
    msgspec.Meta(
        description=f"calendar date, YYYY-MM-DD, {DATE_RULE}",
        extra_json_schema={"pattern": YEAR_PATTERN},
    ),
]
Timestamp = Annotated[
    dt.datetime,
    msgspec.Meta(
        tz=True,
        description=f"RFC 3339 with offset; {TIME_RULE}",
        extra_json_schema={"pattern": TIME_YEAR_PATTERN},
    ),
]
LagDays = Annotated[
    int,
    msgspec.Meta(
        ge=LAG_MIN,
        le=LAG_MAX,
        description="days after the predecessor's finish; negative: a lead (may start before)",
    ),
]
# An integer the read models store in a PostgreSQL ``integer`` column.
Int32 = Annotated[int, msgspec.Meta(extra_json_schema={"minimum": INT_MIN, "maximum": INT_MAX})]

MilestoneKind = Literal["time", "event", "technical"]
Health = Literal["on_track", "at_risk", "late", "missed", "achieved"]
CheckResult = Literal["passed", "failed"]
DependencyPolicy = Literal["notify", "shift"]


class Event(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True, omit_defaults=True
):
    """Base of every event: the tag is the class name, so ``type`` names the fact."""


class ProjectEvent(Event, frozen=True, kw_only=True, tag_field="type", tag=True):
    """A fact of the project aggregate (stored on ``milestones.events.<project_id>``). Some name
    a milestone too (a dependency, a subscription's or a report's scope): that is their own
    field, and the project is still their aggregate."""

    project_id: Id


class MilestoneEvent(Event, frozen=True, kw_only=True, tag_field="type", tag=True):
    """A fact of one milestone's aggregate (``milestones.events.<project_id>.<milestone_id>``)."""

    project_id: Id
    milestone_id: Id
