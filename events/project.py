"""Events of the project aggregate, stored on ``milestones.events.<project_id>``.

The project owns what needs the whole picture: the dependency graph (cycle checks), baselines
(a snapshot of every milestone's due date), stakeholders and status reports.
"""

from __future__ import annotations

from events.common import (
    Date,
    DependencyPolicy,
    Event,
    Health,
    Id,
    LagDays,
    Name,
    Secret,
    Text,
    Url,
)


class ProjectCreated(Event, frozen=True, kw_only=True):
    project_id: Id
    name: Name
    goals: list[Text] = []
    dependency_policy: DependencyPolicy = "notify"


class DependencyAdded(Event, frozen=True, kw_only=True):
    """Finish-to-start: ``milestone_id`` may be due no earlier than ``depends_on`` + lag."""

    project_id: Id
    milestone_id: Id
    depends_on: Id
    lag_days: LagDays = 0


class DependencyRemoved(Event, frozen=True, kw_only=True):
    project_id: Id
    milestone_id: Id
    depends_on: Id


class BaselineSet(Event, frozen=True, kw_only=True):
    """A named snapshot of planned dates. Publishers send the name; the service fills ``planned``."""

    project_id: Id
    name: Name
    planned: dict[str, Date] = {}


class StakeholderSubscribed(Event, frozen=True, kw_only=True):
    """Webhooks for a project (every milestone) or one milestone. With ``secret``, each POST is
    signed with HMAC-SHA256 over the body using it (the audit trail and queries never show it)."""

    project_id: Id
    stakeholder: Name
    url: Url
    milestone_id: Id | None = None
    secret: Secret | None = None


class StakeholderUnsubscribed(Event, frozen=True, kw_only=True):
    """Ends a subscription made with the same stakeholder, url and milestone_id (or none)."""

    project_id: Id
    stakeholder: Name
    url: Url
    milestone_id: Id | None = None


class StatusReported(Event, frozen=True, kw_only=True):
    """A person's status update: kept, shown and used as a report date for trend analysis."""

    project_id: Id
    health: Health
    note: Text
    milestone_id: Id | None = None


PROJECT_EVENTS = (
    ProjectCreated,
    DependencyAdded,
    DependencyRemoved,
    BaselineSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
)
