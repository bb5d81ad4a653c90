"""Every event type is handled, or named as ignored, by every function that folds, decides or
describes events. The instances come from the contract itself (``EVENT_TYPES``), so a type added
there without teaching each of these functions fails here, instead of being skipped in production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec
import pytest

from events import (
    EVENT_TYPES,
    MilestoneEvent,
    MilestonePlanned,
    ProjectCreated,
    ProjectEvent,
    StoredEvent,
    TaskAdded,
    UnhandledEvent,
    milestone_of,
    stream_subject,
)
from events.common import Event, Id
from events.errors import Rejected
from projections import audit, history, status
from services.domain import milestone, project
from services.notify.decision import describe

P = "apollo"
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
DUE = dt.date(2026, 12, 1)
# Ids that refer to the states below, so the functions get past "not found" to the type itself.
NAMED_VALUES = {"project_id": P, "milestone_id": "m1", "task_id": "t1", "depends_on": "m0"}


def value_for(name: str, t: msgspec.inspect.Type) -> object:
    """A valid value of a field: the named id, or the least its type's constraints allow."""
    if name in NAMED_VALUES:
        return NAMED_VALUES[name]
    match t:
        case msgspec.inspect.Metadata(type=constrained):
            return value_for(name, constrained)
        case msgspec.inspect.StrType(pattern=pattern) if pattern and "https?" in pattern:
            return "https://example.com/hook"
        case msgspec.inspect.StrType(min_length=n):
            return "x" * max(n or 1, 1)
        case msgspec.inspect.DateTimeType():
            return T0
        case msgspec.inspect.DateType():
            return DUE
        case msgspec.inspect.IntType(ge=ge):
            return ge or 0
        case msgspec.inspect.LiteralType(values=values):
            return values[0]
        case msgspec.inspect.ListType() | msgspec.inspect.SetType():
            return []
        case msgspec.inspect.DictType():
            return {}
        case msgspec.inspect.UnionType(types=types):
            present = [u for u in types if not isinstance(u, msgspec.inspect.NoneType)]
            return value_for(name, present[0])
    raise TypeError(f"no example value for field {name} of type {t}: teach value_for")


def example(cls: type[Event]) -> Event:
    """One valid instance of an event type, with only its required fields."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    data = {f.encode_name: value_for(f.name, f.type) for f in info.fields if f.required}
    return msgspec.convert(data, cls)  # validates against the contract's constraints


def stored(event: Event, position: int = 3) -> StoredEvent:
    return StoredEvent(
        id=f"e{position}",
        source="test",
        type=type(event).__name__,
        subject=stream_subject(event),
        time=T0,
        recordedtime=T0,
        correlationid="c",
        causationid="c",
        data=event,
    )


PLANNED = MilestonePlanned(project_id=P, milestone_id="m1", name="Launch", kind="event", due=DUE)
TASK = TaskAdded(project_id=P, milestone_id="m1", task_id="t1", title="Build")
CREATED = ProjectCreated(project_id=P, name="Apollo")

MILESTONE = milestone.evolve(milestone.evolve(milestone.initial_state(P, "m1"), PLANNED), TASK)
PROJECT = project.evolve(project.initial_state(P), CREATED)
ROW = status.evolve(status.evolve(None, 1, stored(PLANNED, 1)), 2, stored(TASK, 2))


def refusing(decide: Callable[[Event], list[Event]]) -> Callable[[Event], object]:
    """A decider handles a message it refuses (``Rejected``) as much as one it accepts."""

    def run(event: Event) -> object:
        try:
            return decide(event)
        except Rejected as refused:
            return refused

    return run


HANDLERS: dict[str, Callable[[Event], object]] = {
    "milestone.evolve": lambda e: milestone.evolve(MILESTONE, e),
    "milestone.decide": refusing(lambda e: milestone.decide(e, MILESTONE)),
    "project.evolve": lambda e: project.evolve(PROJECT, e),
    "project.decide": refusing(lambda e: project.decide(e, PROJECT, {"m1": MILESTONE})),
    "status.key_of": lambda e: status.key_of(stored(e)),
    "status.evolve": lambda e: status.evolve(ROW, 3, stored(e)),
    "history.rows": lambda e: history.rows(3, stored(e)),
    "audit.row": lambda e: audit.row(3, stored(e)),
    "describe": lambda e: describe(type(e).__name__, msgspec.to_builtins(e)),
    "milestone_of": milestone_of,
    "stream_subject": stream_subject,
}


def test_every_type_has_an_example() -> None:
    for name, cls in EVENT_TYPES.items():
        event = example(cls)
        assert type(event) is cls and isinstance(event, ProjectEvent | MilestoneEvent), name


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@pytest.mark.parametrize("where", HANDLERS)
def test_every_type_is_handled_or_ignored(where: str, type_name: str) -> None:
    event = example(EVENT_TYPES[type_name])
    try:
        HANDLERS[where](event)
    except UnhandledEvent as unhandled:
        pytest.fail(f"{where} neither handles nor names as ignored {type_name}: {unhandled}")


# Types the contract does not have: what every function does with a type nobody taught it.
class MilestoneRenamed(MilestoneEvent, frozen=True, kw_only=True):
    name: str


class ProjectArchived(ProjectEvent, frozen=True, kw_only=True):
    reason: str


class ScopeChanged(ProjectEvent, frozen=True, kw_only=True):
    milestone_id: Id


UNKNOWN = [
    MilestoneRenamed(project_id=P, milestone_id="m1", name="Liftoff"),
    ProjectArchived(project_id=P, reason="done"),
    ScopeChanged(project_id=P, milestone_id="m1"),
]
# Which unknown types reach a function's unhandled default. The aggregates' own functions refuse
# or ignore the other aggregate's events as a whole (they never receive them: a message goes to
# the aggregate its subject names); a milestone event's subject and milestone come from its base,
# so only project events name their milestone (or none) type by type.
REACHES_DEFAULT: dict[str, type[Event]] = {
    "milestone.evolve": MilestoneEvent,
    "milestone.decide": MilestoneEvent,
    "project.evolve": ProjectEvent,
    "project.decide": ProjectEvent,
    "status.key_of": ProjectEvent,
    "status.evolve": Event,
    "history.rows": Event,
    "audit.row": ProjectEvent,
    "describe": Event,
    "milestone_of": ProjectEvent,
}


@pytest.mark.parametrize(
    ("where", "event"),
    [
        pytest.param(where, event, id=f"{where}-{type(event).__name__}")
        for where, kind in REACHES_DEFAULT.items()
        for event in UNKNOWN
        if isinstance(event, kind)
    ],
)
def test_an_untaught_type_is_never_skipped_silently(where: str, event: Event) -> None:
    with pytest.raises(UnhandledEvent, match=type(event).__name__):
        HANDLERS[where](event)


def test_the_union_lists_every_event_type_once() -> None:
    """``events.AnyEvent`` is written out for the type checker; it must be the contract's types."""
    from typing import get_args

    from events import AnyEvent
    from events.milestone import MILESTONE_EVENTS
    from events.project import PROJECT_EVENTS

    members = get_args(AnyEvent)
    assert len(members) == len(set(members))
    assert set(members) == set(MILESTONE_EVENTS + PROJECT_EVENTS)
