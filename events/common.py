"""Field types shared by every event contract.

Constraints live in the types (msgspec ``Meta``) so that validation, error messages and the
exported JSON Schema all come from one place.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Id = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN,
        description="1-64 characters of A-Z, a-z, 0-9, '_' or '-' (ids become NATS subject tokens)",
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Reason = Annotated[
    str, msgspec.Meta(min_length=1, max_length=2000, description="why: required, not empty")
]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://\S{1,2000}$", max_length=2048)]
Secret = Annotated[
    str,
    msgspec.Meta(
        min_length=16, max_length=256, description="webhook signing key: 16-256 characters"
    ),
]
Date = Annotated[dt.date, msgspec.Meta(description="calendar date, YYYY-MM-DD")]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True, description="RFC 3339 with offset")]
LagDays = Annotated[int, msgspec.Meta(ge=0, le=3650)]

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
