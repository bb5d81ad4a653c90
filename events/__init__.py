"""The public event contract: every event type, its subject, and the codecs (built once).

``AnyEvent`` is a msgspec tagged union (tag field ``type`` = class name). Stored events are
decoded in one pass through ``STORED_DECODER``; inbound CloudEvent data is decoded per type with
``DATA_DECODERS`` so errors name the type and the field. Every event is a ``ProjectEvent`` or a
``MilestoneEvent`` (``events.common``): the base says which aggregate, and so which subject, it
belongs to.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from events.common import Event, MilestoneEvent, ProjectEvent
from events.envelope import CloudEventIn, EventRef, Receipt, Rejection, Reply, StoredEvent
from events.milestone import (
    MILESTONE_EVENTS,
    ApprovalRequested,
    ApproversSet,
    DeadlineReached,
    DependencyViolated,
    MilestoneAchieved,
    MilestoneApprovalRejected,
    MilestoneApproved,
    MilestoneCancelled,
    MilestoneMissed,
    MilestonePlanned,
    MilestoneRescheduled,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
)
from events.project import (
    PROJECT_EVENTS,
    BaselineSet,
    DependencyAdded,
    DependencyRemoved,
    ProjectCreated,
    ProjectTargetSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
)
from events.subjects import milestone_subject, project_subject

# Written out (not built from the tuples) so that mypy sees the union; tests/test_event_types.py
# checks that it lists exactly the types of MILESTONE_EVENTS and PROJECT_EVENTS.
AnyEvent = (
    MilestonePlanned
    | TaskAdded
    | TaskCompleted
    | TaskReopened
    | MilestoneRescheduled
    | MilestoneAchieved
    | MilestoneCancelled
    | DeadlineReached
    | MilestoneMissed
    | DependencyViolated
    | ApproversSet
    | ApprovalRequested
    | MilestoneApproved
    | MilestoneApprovalRejected
    | ProjectCreated
    | DependencyAdded
    | DependencyRemoved
    | BaselineSet
    | ProjectTargetSet
    | StakeholderSubscribed
    | StakeholderUnsubscribed
    | StatusReported
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in MILESTONE_EVENTS + PROJECT_EVENTS
}
# What other systems may publish (the contract's "types in"); derived-only events are not here.
DERIVED_ONLY = frozenset({"MilestoneMissed", "DependencyViolated", "ApprovalRequested"})
INBOUND_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - DERIVED_ONLY

DATA_DECODERS: dict[str, msgspec.json.Decoder] = {
    name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()
}
ENCODER = msgspec.json.Encoder()


class _StoredTyped(StoredEvent, frozen=True, kw_only=True, omit_defaults=True):
    data: AnyEvent


STORED_DECODER = msgspec.json.Decoder(_StoredTyped)
RECEIPT_DECODER = msgspec.json.Decoder(Receipt)
CLOUDEVENT_DECODER = msgspec.json.Decoder(CloudEventIn)
CLOUDEVENT_BATCH_DECODER = msgspec.json.Decoder(list[CloudEventIn])
REPLY_DECODER = msgspec.json.Decoder(Reply)
REJECTION_DECODER = msgspec.json.Decoder(Rejection)


class UnhandledEvent(TypeError):
    """Code met an event type it neither handles nor names as ignored: a type was added to the
    contract without teaching every evolve, decider and projection about it. Raised instead of
    skipping it silently (a projection parks the event and says so)."""

    def __init__(self, type_name: str, where: str) -> None:
        super().__init__(
            f"{where} does not handle {type_name}: handle it, or name it where the types it "
            "ignores are listed"
        )
        self.type_name = type_name
        self.where = where


def stream_subject(event: Event) -> str:
    """The aggregate subject an event belongs to (its consistency boundary)."""
    match event:
        case MilestoneEvent(project_id=p, milestone_id=m):
            return milestone_subject(p, m)
        case ProjectEvent(project_id=p):
            return project_subject(p)
    raise UnhandledEvent(type(event).__name__, "stream_subject")


def milestone_of(event: Event) -> str | None:
    """The milestone an event is about: a milestone event's own, or the one a project event
    names (a dependency's successor, the scope of a subscription or of a status report)."""
    match event:
        case (
            MilestoneEvent(milestone_id=m)
            | DependencyAdded(milestone_id=m)
            | DependencyRemoved(milestone_id=m)
            | StakeholderSubscribed(milestone_id=m)
            | StakeholderUnsubscribed(milestone_id=m)
            | StatusReported(milestone_id=m)
        ):
            return m
        case ProjectCreated() | BaselineSet() | ProjectTargetSet():
            return None
    raise UnhandledEvent(type(event).__name__, "milestone_of")


# Upcasters turn an older (or newer, during a rolling deploy) stored shape into the current one:
# {(type, schemaversion): fn(data dict) -> data dict}. A schema change that breaks old events gets
# a new type or an upcaster here, never an edit in place.
CURRENT_SCHEMA_VERSION = 1
UPCASTERS: dict[tuple[str, int], Callable[[dict], dict]] = {}


class UnknownSchemaVersion(ValueError):
    pass


class _StoredLoose(StoredEvent, frozen=True, kw_only=True, omit_defaults=True):
    data: dict


_LOOSE_DECODER = msgspec.json.Decoder(_StoredLoose)


def decode_stored(body: bytes) -> StoredEvent:
    """One-pass decode of a stored event; events of another schema version go through
    ``UPCASTERS``."""
    try:
        return STORED_DECODER.decode(body)
    except msgspec.ValidationError:
        loose = _LOOSE_DECODER.decode(body)
        if loose.schemaversion == CURRENT_SCHEMA_VERSION:
            raise
        upcast = UPCASTERS.get((loose.type, loose.schemaversion))
        if upcast is None:
            raise UnknownSchemaVersion(
                f"{loose.type} schemaversion {loose.schemaversion} has no upcaster to version "
                f"{CURRENT_SCHEMA_VERSION}"
            ) from None
        data = msgspec.convert({**upcast(dict(loose.data)), "type": loose.type}, AnyEvent)
        return msgspec.structs.replace(loose, data=data, schemaversion=CURRENT_SCHEMA_VERSION)


def event_of(stored: StoredEvent) -> Event:
    """The typed event a decoded envelope carries (``StoredEvent.data`` is typed ``object``)."""
    if not isinstance(stored.data, Event):
        raise TypeError(f"stored event {stored.id} carries no decoded event: use decode_stored")
    return stored.data


__all__ = [
    "AnyEvent",
    "ApprovalRequested",
    "ApproversSet",
    "BaselineSet",
    "CloudEventIn",
    "DeadlineReached",
    "DependencyAdded",
    "DependencyRemoved",
    "DependencyViolated",
    "Event",
    "EventRef",
    "event_of",
    "EVENT_TYPES",
    "INBOUND_TYPES",
    "MilestoneAchieved",
    "MilestoneApprovalRejected",
    "MilestoneApproved",
    "MilestoneCancelled",
    "MilestoneEvent",
    "MilestoneMissed",
    "MilestonePlanned",
    "MilestoneRescheduled",
    "ProjectCreated",
    "ProjectEvent",
    "ProjectTargetSet",
    "Receipt",
    "Rejection",
    "Reply",
    "StakeholderSubscribed",
    "StakeholderUnsubscribed",
    "StatusReported",
    "StoredEvent",
    "TaskAdded",
    "TaskCompleted",
    "TaskReopened",
    "UnhandledEvent",
    "milestone_of",
    "stream_subject",
]
