"""Events of the project aggregate, stored on ``milestones.events.<project_id>``.

The project owns what needs the whole picture: the dependency graph (cycle checks), baselines
(a snapshot of every milestone's due date), stakeholders and status reports.
"""

from __future__ import annotations

from typing import Annotated, Literal

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

# A webhook secret as stored. Publishers send it in clear (``Secret``, 16-256 characters, or
# the word "generate": what the exported JSON Schema says, see ``INBOUND_FIELDS``); the intake
# seals it before deciding (services/intake/webhooks.py), so the log holds
# "sealed.v1.<kid>.<nonce>.<ciphertext>" (services/notify/secretbox.py), longer than the clear
# value. Events stored before secrets were sealed hold the clear value: both decode, and only the
# notifier tells them apart. The minimum is the word's length so that the intake, not the
# decoder, answers a short secret (with what to send instead).
GENERATE = "generate"
SealedSecret = Annotated[
    str,
    msgspec.Meta(
        min_length=len(GENERATE),
        max_length=1024,
        description="webhook signing key, sealed (encrypted) by the intake before it is stored",
    ),
]
SECRET_CLEAR_MIN = 16
SECRET_CLEAR_MAX = 256  # what a publisher may send (``Secret``), checked by the intake

# How a subscription's webhooks carry the notification (services/notify/outbox.py). Absent in
# events stored before payload versions existed: those subscriptions keep today's body
# ("milestones.v1") so their receivers do not break; the intake fills it for new ones.
PayloadFormat = Literal["cloudevents.v1", "milestones.v1"]
PAYLOAD_DEFAULT: PayloadFormat = "cloudevents.v1"
PAYLOAD_LEGACY: PayloadFormat = "milestones.v1"


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
    """A named snapshot of planned dates: the name, and ``planned`` (milestone id -> date) for a plan's own baseline, each one a planned milestone; absent or empty, the service fills it from the current due dates."""  # noqa: E501

    name: Name
    planned: dict[str, Date] = {}


class ProjectTargetSet(ProjectEvent, frozen=True, kw_only=True):
    """The date the project must finish by (null clears it): the critical path's backward pass starts there, else at the latest due date of its last milestones."""  # noqa: E501

    target: Date | None
    reason: Text | None = None


class StakeholderSubscribed(ProjectEvent, frozen=True, kw_only=True):
    """Webhooks for a project (every milestone) or one milestone, signed as Standard Webhooks
    define (webhook-id, webhook-timestamp, webhook-signature) with ``secret``: absent or
    "generate", the service generates one and returns it once, in the reply. ``payload``:
    "cloudevents.v1" (the default: a CloudEvent, structured JSON) or "milestones.v1"."""

    stakeholder: Name
    url: Url
    milestone_id: Id | None = None
    secret: SealedSecret | None = None
    payload: PayloadFormat | None = None


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
    "StakeholderSubscribed": {"secret": Secret | Literal["generate"] | None},
}

PROJECT_EVENTS = (
    ProjectCreated,
    DependencyAdded,
    DependencyRemoved,
    BaselineSet,
    ProjectTargetSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
)
