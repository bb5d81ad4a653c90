"""Events of the project aggregate, stored on ``milestones.events.<project_id>``.

The project owns what needs the whole picture: the dependency graph (cycle checks), baselines
(a snapshot of every milestone's due date), stakeholders and status reports.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

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

# A webhook secret as stored. Publishers send it in clear (``Secret``, 16-256 characters: what
# the exported JSON Schema says, see ``INBOUND_FIELDS``); the intake seals it before deciding
# (services/intake/webhooks.py), so the log holds "sealed.v1.<kid>.<nonce>.<ciphertext>"
# (services/notify/secretbox.py), longer than the clear value. Events stored before secrets
# were sealed hold the clear value: both decode, and only the notifier tells them apart.
SealedSecret = Annotated[
    str,
    msgspec.Meta(
        min_length=16,
        max_length=1024,
        description="webhook signing key, sealed (encrypted) by the intake before it is stored",
    ),
]
SECRET_CLEAR_MAX = 256  # what a publisher may send (``Secret``), checked by the intake


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
    secret: SealedSecret | None = None


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


# Fields whose inbound form (what publishers send, and the exported JSON Schema shows) differs
# from the stored one: {type: {field: inbound type}}.
INBOUND_FIELDS: dict[str, dict[str, object]] = {
    "StakeholderSubscribed": {"secret": Secret | None},
}

PROJECT_EVENTS = (
    ProjectCreated,
    DependencyAdded,
    DependencyRemoved,
    BaselineSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
)
