"""Events of the project aggregate, stored on ``milestones.events.<project_id>``.

The project owns what needs the whole picture: the dependency graph (cycle checks), baselines
(a snapshot of every milestone's due date), stakeholders and status reports.
"""

from __future__ import annotations

from events.common import (
    Date,
    DependencyPolicy,
    Health,
    Id,
    LagDays,
    Name,
    ProjectEvent,
    Secret,
    Text,
    Url,
)


class ProjectCreated(ProjectEvent, frozen=True, kw_only=True):
    name: Name
    goals: list[Text] = []
    dependency_policy: DependencyPolicy = "notify"


class DependencyAdded(ProjectEvent, frozen=True, kw_only=True):
    """Finish-to-start: ``milestone_id`` may be due no earlier than ``depends_on`` + lag."""

    milestone_id: Id
    depends_on: Id
    lag_days: LagDays = 0


class DependencyRemoved(ProjectEvent, frozen=True, kw_only=True):
    milestone_id: Id
    depends_on: Id


class BaselineSet(ProjectEvent, frozen=True, kw_only=True):
    # one line: the docstring is the exported JSON Schema's description, which must not change
    """A named snapshot of planned dates. Publishers send the name; the service fills ``planned``."""  # noqa: E501

    name: Name
    planned: dict[str, Date] = {}


class StakeholderSubscribed(ProjectEvent, frozen=True, kw_only=True):
    """Webhooks for a project (every milestone) or one milestone. With ``secret``, each POST is
    signed with HMAC-SHA256 over the body using it (the audit trail and queries never show it)."""

    stakeholder: Name
    url: Url
    milestone_id: Id | None = None
    secret: Secret | None = None


class StakeholderUnsubscribed(ProjectEvent, frozen=True, kw_only=True):
    """Ends a subscription made with the same stakeholder, url and milestone_id (or none)."""

    stakeholder: Name
    url: Url
    milestone_id: Id | None = None


class StatusReported(ProjectEvent, frozen=True, kw_only=True):
    """A person's status update: kept, shown and used as a report date for trend analysis."""

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
