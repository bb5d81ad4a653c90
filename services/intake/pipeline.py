"""Pipelined commit rounds: what two rounds in flight must not share (pure).

The committer sends a round while the last one still waits for its fsync. Two rounds in flight
never share a project or a receipt, so they commute; a unit that shares one with a round in
flight waits for its answer (``services.intake.committer``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from events import project_subject
from events.subjects import EVENTS_PREFIX
from services import domain
from services.intake.round import Command, Pending, RoundOutcome

U = TypeVar("U", bound=Pending)


def aggregate_key(subject: str) -> str:
    """What a subject belongs to for pipelining: a project (its own subject and every milestone of
    it: a decision about one milestone may read the project and, through dependencies, the
    others), or the subject itself (a receipt)."""
    if not subject.startswith(_EVENTS):
        return subject
    end = subject.find(".", len(_EVENTS))  # the project's token ends there (a milestone's)
    return subject if end < 0 else subject[:end]


_EVENTS = f"{EVENTS_PREFIX}."


def unit_keys(
    commands: Sequence[Command],
    receipts: Sequence[str],
    plans: Sequence[domain.Plan] | None = None,
) -> frozenset[str]:
    """Every project and receipt a unit may read or write (its plans say which: ``plans``, one
    per command, when the caller made them already)."""
    keys = set(receipts)
    for p in plans if plans is not None else [domain.plan(c.fact) for c in commands]:
        keys.update(aggregate_key(s) for s in (p.target, *p.reads))
        for project in (p.all_milestones_of, p.milestones_if_dependent):
            if project:
                keys.add(aggregate_key(project_subject(project)))
    return frozenset(keys)


def round_keys(outcome: RoundOutcome[U], keys_of: Callable[[U], frozenset[str]]) -> frozenset[str]:
    """What a round in flight holds: its accepted units' keys and every subject it writes
    (derived events included)."""
    held = {aggregate_key(m.subject) for m in outcome.batch.messages}
    for unit, _refs in outcome.accepted:
        held |= keys_of(unit)
    return frozenset(held)


def free_of(
    units: Sequence[U], held: frozenset[str], keys_of: Callable[[U], frozenset[str]]
) -> tuple[list[U], list[U]]:
    """(units that share nothing with the rounds in flight, the others), each in arrival order."""
    if not held:
        return list(units), []
    free: list[U] = []
    wait: list[U] = []
    for unit in units:
        (wait if keys_of(unit) & held else free).append(unit)
    return free, wait
