"""The public event contract: every event type, its subject, and the codecs (built once).

``AnyEvent`` is a msgspec tagged union (tag field ``type`` = class name). Stored events are
decoded in one pass through ``STORED_DECODER``; inbound CloudEvent data is decoded per type with
``DATA_DECODERS`` so errors name the type and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import msgspec

from events.common import Event
from events.envelope import CloudEventIn, EventRef, Receipt, Rejection, Reply, StoredEvent
from events.milestone import (
    MILESTONE_EVENTS,
    DeadlineReached,
    DependencyViolated,
    MilestoneAchieved,
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
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
)
from events.subjects import milestone_subject, project_subject

AnyEvent = Union[MILESTONE_EVENTS + PROJECT_EVENTS]  # type: ignore[valid-type]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in MILESTONE_EVENTS + PROJECT_EVENTS
}
# What other systems may publish (the contract's "types in"); derived-only events are not here.
DERIVED_ONLY = frozenset({"MilestoneMissed", "DependencyViolated"})
INBOUND_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - DERIVED_ONLY
_MILESTONE_TYPES = frozenset(cls.__name__ for cls in MILESTONE_EVENTS)

DATA_DECODERS: dict[str, msgspec.json.Decoder] = {
    name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()
}
ENCODER = msgspec.json.Encoder()


class _StoredTyped(StoredEvent, frozen=True, kw_only=True, omit_defaults=True):
    data: AnyEvent  # type: ignore[valid-type]


STORED_DECODER = msgspec.json.Decoder(_StoredTyped)
RECEIPT_DECODER = msgspec.json.Decoder(Receipt)
CLOUDEVENT_DECODER = msgspec.json.Decoder(CloudEventIn)
CLOUDEVENT_BATCH_DECODER = msgspec.json.Decoder(list[CloudEventIn])
REPLY_DECODER = msgspec.json.Decoder(Reply)
REJECTION_DECODER = msgspec.json.Decoder(Rejection)


def stream_subject(event: Event) -> str:
    """The aggregate subject an event belongs to (its consistency boundary)."""
    project_id = event.project_id  # type: ignore[attr-defined]
    if type(event).__name__ in _MILESTONE_TYPES:
        return milestone_subject(project_id, event.milestone_id)  # type: ignore[attr-defined]
    return project_subject(project_id)


# Upcasters turn an older (or newer, during a rolling deploy) stored shape into the current one:
# {(type, schemaversion): fn(data dict) -> data dict}. A schema change that breaks old events gets
# a new type or an upcaster here, never an edit in place.
CURRENT_SCHEMA_VERSION = 1
UPCASTERS: dict[tuple[str, int], Callable[[dict], dict]] = {}


class UnknownSchemaVersion(ValueError):
    pass


class _StoredLoose(StoredEvent, frozen=True, kw_only=True, omit_defaults=True):
    data: dict  # type: ignore[assignment]


_LOOSE_DECODER = msgspec.json.Decoder(_StoredLoose)


def decode_stored(body: bytes) -> StoredEvent:
    """One-pass decode of a stored event; events of another schema version go through ``UPCASTERS``."""
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


__all__ = [
    "AnyEvent",
    "BaselineSet",
    "CloudEventIn",
    "DeadlineReached",
    "DependencyAdded",
    "DependencyRemoved",
    "DependencyViolated",
    "Event",
    "EventRef",
    "EVENT_TYPES",
    "INBOUND_TYPES",
    "MilestoneAchieved",
    "MilestoneCancelled",
    "MilestoneMissed",
    "MilestonePlanned",
    "MilestoneRescheduled",
    "ProjectCreated",
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
]
