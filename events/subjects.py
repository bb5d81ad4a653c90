"""Every NATS subject and JetStream stream name of the contract, in one place.

Ids are subject tokens (``events.common.ID_PATTERN``), so a subject is built by joining them.
"""

from __future__ import annotations

PREFIX = "milestones"

# -- the event log: one subject per aggregate, receipts beside them --------------------------------
EVENTS_STREAM = "MILESTONES"
EVENTS_PREFIX = f"{PREFIX}.events"
RECEIPTS_PREFIX = f"{PREFIX}.ids"
ALL_EVENTS = f"{EVENTS_PREFIX}.>"  # every event (receipts are on another prefix)
MILESTONE_EVENTS = f"{EVENTS_PREFIX}.*.*"  # events of every milestone aggregate
CREDENTIALS_PREFIX = f"{PREFIX}.credentials"  # credentials issued and revoked (events.identity)
CREDENTIALS = f"{CREDENTIALS_PREFIX}.*"
EVENTS_SUBJECTS = [f"{EVENTS_PREFIX}.*", MILESTONE_EVENTS, f"{RECEIPTS_PREFIX}.*", CREDENTIALS]

# -- the log's signed checkpoints (tamper evidence): a stream of their own, so positions never shift
CHECKPOINTS_STREAM = "MILESTONES_CHECKPOINTS"
CHECKPOINTS_SUBJECT = f"{PREFIX}.checkpoints"
CHECKPOINTS_SUBJECTS = [CHECKPOINTS_SUBJECT]

# -- in: request/reply commands and the durable inbox ----------------------------------------------
COMMANDS_PREFIX = f"{PREFIX}.commands"
COMMANDS = f"{COMMANDS_PREFIX}.*"  # what publishers use (the server maps it, see README)
ALL_COMMANDS = f"{COMMANDS_PREFIX}.>"  # what the intake hears: .<credential>.<Type> and .<Type>
BATCH_TOKEN = "batch"  # milestones.commands.batch / milestones.inbox.batch: a JSON array
INBOX_STREAM = "MILESTONES_INBOX"
INBOX_PREFIX = f"{PREFIX}.inbox"
INBOX = f"{INBOX_PREFIX}.>"
SCHEDULES_PREFIX = f"{PREFIX}.schedules"  # deadline timers (ADR-51 message schedules)
INBOX_SUBJECTS = [INBOX, f"{SCHEDULES_PREFIX}.>"]

# -- refusals of inbox messages --------------------------------------------------------------------
REJECTIONS_STREAM = "MILESTONES_REJECTIONS"
REJECTIONS_PREFIX = f"{PREFIX}.rejections"
REJECTIONS = f"{REJECTIONS_PREFIX}.>"
REJECTIONS_SUBJECTS = [REJECTIONS]

# -- out: queries ----------------------------------------------------------------------------------
QUERY_PREFIX = f"{PREFIX}.query"
QUERIES = f"{QUERY_PREFIX}.*"  # what clients use
ALL_QUERIES = f"{QUERY_PREFIX}.>"  # what the query service hears: .<credential>.<name> too


def project_subject(project_id: str) -> str:
    return f"{EVENTS_PREFIX}.{project_id}"


def milestone_subject(project_id: str, milestone_id: str) -> str:
    return f"{EVENTS_PREFIX}.{project_id}.{milestone_id}"


def milestones_of(project_id: str) -> str:
    """The wildcard over every milestone aggregate of one project."""
    return f"{EVENTS_PREFIX}.{project_id}.*"


def is_milestone_subject(subject: str) -> bool:
    return subject.startswith(f"{EVENTS_PREFIX}.") and subject.count(".") == 3


def receipt_subject(digest: str) -> str:
    return f"{RECEIPTS_PREFIX}.{digest}"


def credential_subject(credential_id: str) -> str:
    return f"{CREDENTIALS_PREFIX}.{credential_id}"


def command_subject(type_: str) -> str:
    return f"{COMMANDS_PREFIX}.{type_}"


def inbox_subject(type_: str) -> str:
    return f"{INBOX_PREFIX}.{type_}"


def schedule_subject(project_id: str, milestone_id: str) -> str:
    return f"{SCHEDULES_PREFIX}.{project_id}.{milestone_id}"


def rejection_subject(type_token: str) -> str:
    return f"{REJECTIONS_PREFIX}.{type_token}"


def query_subject(name: str) -> str:
    return f"{QUERY_PREFIX}.{name}"


def type_token(subject: str) -> str | None:
    """The CloudEvent type a command or inbox subject names (None for a batch)."""
    token = subject.rsplit(".", 1)[-1]
    return None if token in (BATCH_TOKEN, "") else token
