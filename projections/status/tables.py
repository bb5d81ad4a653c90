"""The status projection's other tables: projects (``ms_projects``), webhook subscriptions
(``ms_subscriptions``) and status reports (``ms_status_reports``). Each function is pure: the
row an event adds, as its columns hold it (``projections.storable``), or None."""

from __future__ import annotations

from events import ProjectCreated, StakeholderSubscribed, StatusReported, StoredEvent
from projections.storable import jsonb, maybe_text, text, timestamp

PROJECT_COLUMNS = ("project_id", "name", "goals", "dependency_policy", "created_at", "position")
REPORT_COLUMNS = (
    "position",
    "project_id",
    "milestone_id",
    "reported_at",
    "actor",
    "health",
    "note",
)


def project_row(position: int, stored: StoredEvent) -> tuple | None:
    e = stored.data
    if not isinstance(e, ProjectCreated):
        return None
    return (
        e.project_id,
        text(e.name),
        jsonb(list(e.goals)),
        e.dependency_policy,
        timestamp(stored.time),
        position,
    )


SUBSCRIPTION_COLUMNS = (
    "project_id",
    "scope",
    "milestone_id",
    "stakeholder",
    "url",
    "secret",
    "position",
    "subscribed_at",
    "payload",
)


def subscription_row(position: int, stored: StoredEvent) -> tuple | None:
    e = stored.data
    if not isinstance(e, StakeholderSubscribed):
        return None
    return (
        e.project_id,
        e.milestone_id or "",
        e.milestone_id,
        text(e.stakeholder),
        text(e.url),
        maybe_text(e.secret),
        position,
        timestamp(stored.time),
        e.payload,
    )


def report_row(position: int, stored: StoredEvent) -> tuple | None:
    e = stored.data
    if not isinstance(e, StatusReported):
        return None
    return (
        position,
        e.project_id,
        e.milestone_id,
        timestamp(stored.time),
        maybe_text(stored.actor),
        e.health,
        text(e.note),
    )
