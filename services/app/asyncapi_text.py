"""The prose of the AsyncAPI document (``services.app.asyncapi``) and an example of each message
type, kept apart from the code that builds the document from the types."""

from __future__ import annotations

from typing import Any

from events.subjects import (
    BATCH_TOKEN,
    COMMANDS_PREFIX,
    EVENTS_PREFIX,
    EVENTS_STREAM,
    INBOX_PREFIX,
    INBOX_STREAM,
    QUERY_PREFIX,
    RECEIPTS_PREFIX,
    REJECTIONS_PREFIX,
    REJECTIONS_STREAM,
)
from services.query.registry import QUERIES

_BY_ROLE = {
    role: [q.name for q in QUERIES if q.role == role] for role in ("reader", "auditor", "admin")
}

INFO = f"""\
Milestones' NATS interface: other systems report facts as CloudEvents 1.0 on
`{COMMANDS_PREFIX}.<Type>` (request/reply) or `{INBOX_PREFIX}.<Type>` (durable, fire and
forget); readers ask queries on `{QUERY_PREFIX}.<name>`; the services append the events to the
JetStream stream `{EVENTS_STREAM}` and record refused inbox messages on `{REJECTIONS_STREAM}`.

The schemas are generated from the msgspec types the services decode with; the same schemas are
exported as JSON Schema files by `milestones schema --out DIR`. HTTP (`POST /events`, the query
routes, bearer tokens, JWTs and feed tokens) is described by the OpenAPI document at
`/schema/openapi.json`.

**Who may use which channel** (enforced by nats-server: every credential has a NATS account of
its own whose imports map `<prefix>.<x>` to `<prefix>.<slot>.<x>`, so the services learn the
sender from the subject, never from the message):

| principal | may |
| --- | --- |
| publisher | request `{COMMANDS_PREFIX}.<Type>`, publish `{INBOX_PREFIX}.<Type>`, for \
the CloudEvent sources (and projects, if named) of its credential |
| reader | request `{QUERY_PREFIX}.<name>` of reader queries |
| auditor | reader queries and {", ".join(_BY_ROLE["auditor"])} |
| admin | every query, also {", ".join(_BY_ROLE["admin"])} and digest with record or send |
| services | everything: the only identity that publishes `{EVENTS_PREFIX}.>`, receipts \
and rejections, or reads the streams |

A subject outside a principal's role is a permissions violation raised by the server; a known
principal refused by the services (a source, project or role it lacks) gets the error reply
`forbidden`, an unknown or revoked credential `unauthenticated`.
"""

SERVER = (
    "The NATS server of `milestones dev` (default port 4222; compose: the three nodes). "
    "Anonymous connections are refused: connect with a credential's NATS user and password "
    "(`.milestones/dev.json` holds one per role)."
)

# The security schemes, one per kind of NATS principal (services.auth.principal). HTTP's bearer
# tokens, JWTs and feed tokens are not NATS credentials: the OpenAPI document states them.
PRINCIPALS = {
    "publisher": "A publisher credential's NATS user (the credential id) and password, issued "
    "by `milestones credentials create --role publisher --source S [--project P]`: may "
    f"request {COMMANDS_PREFIX}.<Type> and publish {INBOX_PREFIX}.<Type>, for its sources "
    "and projects.",
    "reader": "A reader credential's NATS user and password: reader queries.",
    "auditor": "An auditor credential's NATS user and password: reader and auditor queries.",
    "admin": "An admin credential's NATS user and password: every query.",
    "services": "The services' own identity (a user of the NATS account MILESTONES, from "
    "`milestones nats-config` or `milestones dev`): the only one that appends events, writes "
    "rejection records and reads the streams.",
}

BINARY_MODE = (
    "Structured mode (the default): no CloudEvent header; the body is the CloudEvent as JSON "
    "(a JSON array on the batch subject). Binary mode (CloudEvents NATS binding, working "
    "draft §3.1), exactly when the header ce-specversion is present: the attributes travel as "
    "ce-<attribute> headers and the body is the data alone; datacontenttype is "
    "ce-datacontenttype, else the content-type header (JSON only). Header names match "
    "case-insensitively; values may be percent-encoded (decoded once, UTF-8). Without "
    "ce-specversion a message is structured, whatever its content-type."
)

REPLY_CHANNEL = (
    "The requester's reply subject (a NATS _INBOX.> subject of its own account, set by the "
    "client library for each request): not known in advance."
)

CHANNELS = {
    "commands": "Request/reply: one CloudEvent whose type matches the subject's last token, or "
    f"a JSON array on {COMMANDS_PREFIX}.{BATCH_TOKEN}. Decided at once: the reply says accepted "
    "with each appended event's position, or why not. The same (source, id) sent again appends "
    "nothing and answers like the first time.",
    "inbox": f"Fire and forget, durable: captured by the JetStream stream {INBOX_STREAM} "
    "(work queue) and decided in order, also when the services were down. A refused message is "
    f"recorded on {REJECTIONS_PREFIX}.<Type> with its reason; a transient failure is retried.",
    "rejections": f"One record per refused inbox message, in the stream {REJECTIONS_STREAM} "
    "(deduplicated by inbox position). Read them with `milestones rejections` or the auditor "
    "query rejections.",
    "events": f"The event log: stream {EVENTS_STREAM}, one subject per aggregate (a project, "
    "or one milestone of it), appended only by the services with optimistic concurrency "
    f"(Nats-Expected-Last-Subject-Sequence). Receipts ({RECEIPTS_PREFIX}.*) and credentials "
    "share the stream and are services-only too.",
    "queries": "Request/reply: a JSON object of the query's parameters; the reply is the "
    "query's answer (a page, one item, or a list) or the contract's error reply.",
}

OPERATIONS = {
    "receiveCommand": "The intake (queue group milestones-intake) decodes the CloudEvent, "
    "checks the sender's source and projects, decides, appends atomically and replies.",
    "receiveInboxMessage": "The intake's durable consumer decides each captured message like a "
    "command; there is no reply: refusals become rejection records.",
    "recordRejection": "Written before the inbox message is acked, so nothing is dropped silently.",
    "appendEvent": "Every event a command produces, atomically (one batch per commit).",
}

_TIME = "2026-05-04T09:30:00Z"
_DATA: dict[str, dict[str, Any]] = {
    "ProjectCreated": {"project_id": "apollo", "name": "Apollo", "goals": ["Land on time"]},
    "MilestonePlanned": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "name": "Launch",
        "kind": "time",
        "due": "2026-06-30",
    },
    "TaskAdded": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "task_id": "t1",
        "title": "Final checks",
    },
    "TaskCompleted": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "task_id": "t1",
        "completed_at": "2026-05-04T09:00:00Z",
    },
    "TaskReopened": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "task_id": "t1",
        "reason": "the check failed",
    },
    "MilestoneRescheduled": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "new_due": "2026-07-15",
        "reason": "supplier delay",
    },
    "MilestoneAchieved": {"project_id": "apollo", "milestone_id": "launch"},
    "MilestoneCancelled": {"project_id": "apollo", "milestone_id": "launch", "reason": "scope"},
    "DeadlineReached": {"project_id": "apollo", "milestone_id": "launch", "due": "2026-06-30"},
    "ApproversSet": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "approvers": ["dana", "lee"],
        "approvals_needed": 2,
    },
    "MilestoneApproved": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "meaning": "approved for launch",
    },
    "MilestoneApprovalRejected": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "reason": "the load test failed",
    },
    "DependencyAdded": {
        "project_id": "apollo",
        "milestone_id": "launch",
        "depends_on": "design",
        "lag_days": 2,
    },
    "DependencyRemoved": {"project_id": "apollo", "milestone_id": "launch", "depends_on": "design"},
    "BaselineSet": {"project_id": "apollo", "name": "Q2 plan"},
    "ProjectTargetSet": {"project_id": "apollo", "target": "2027-03-31", "reason": "trade show"},
    "StakeholderSubscribed": {
        "project_id": "apollo",
        "stakeholder": "pm",
        "url": "https://hooks.example.com/milestones",
    },
    "StakeholderUnsubscribed": {
        "project_id": "apollo",
        "stakeholder": "pm",
        "url": "https://hooks.example.com/milestones",
    },
    "StatusReported": {"project_id": "apollo", "health": "at_risk", "note": "supplier is late"},
}
BATCH_EXAMPLE = ("TaskAdded", "TaskCompleted")


def example_data(type_name: str) -> dict[str, Any]:
    return dict(_DATA[type_name])


def example_event(type_name: str) -> dict[str, Any]:
    """A structured-mode CloudEvent of this type, as a publisher sends it."""
    return {
        "specversion": "1.0",
        "id": f"example-{type_name}-1",
        "source": "ci",
        "type": type_name,
        "time": _TIME,
        "actor": "alice",
        "data": example_data(type_name),
    }
