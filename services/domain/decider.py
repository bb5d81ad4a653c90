"""The write side's decider over both aggregates: which subjects a message needs (``plan``),
what it decides (``decide_traced``: events with their causes), and how state folds (``evolve``).

The shell (``services.intake``) loads the planned states, decides, and appends with OCC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import NamedTuple

import msgspec

from events import (
    ApproversSet,
    BaselineSet,
    DeadlineReached,
    DependencyAdded,
    DependencyRemoved,
    MilestoneAchieved,
    MilestoneApprovalRejected,
    MilestoneApproved,
    MilestonePlanned,
    MilestoneRescheduled,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
    TaskCompleted,
    milestone_subject,
    project_subject,
    stream_subject,
)
from events.common import Event
from services.domain import milestone, project
from services.domain.milestone import Milestone
from services.domain.project import Project, Traced

State = Milestone | Project


class Plan(NamedTuple):
    target: str  # the subject the message's own events go to
    reads: tuple[str, ...]  # further subjects the decision needs (read, not written)
    all_milestones_of: str | None = None  # load every milestone of this project (baselines)
    # load every milestone of this project if it has dependencies (reschedules): a project
    # without any needs none of them, and the shell checks the project state it read
    milestones_if_dependent: str | None = None


def plan(msg: Event) -> Plan:
    target = stream_subject(msg)
    match msg:
        case MilestonePlanned(project_id=p):
            return Plan(target, (project_subject(p),))
        case MilestoneRescheduled(project_id=p):
            # dependencies: the project's graph and its milestones' dates
            return Plan(target, (project_subject(p),), milestones_if_dependent=p)
        case DependencyAdded(project_id=p) | BaselineSet(project_id=p):
            return Plan(target, (), all_milestones_of=p)
        case DependencyRemoved(project_id=p, milestone_id=m, depends_on=d):
            return Plan(target, (milestone_subject(p, m), milestone_subject(p, d)))
        case (
            StakeholderSubscribed(project_id=p, milestone_id=m)
            | StakeholderUnsubscribed(project_id=p, milestone_id=m)
            | StatusReported(project_id=p, milestone_id=m)
        ) if m:
            return Plan(target, (milestone_subject(p, m),))
    return Plan(target, ())


def initial_state(subject: str) -> State:
    tokens = subject.split(".")[2:]
    if len(tokens) == 1:
        return project.initial_state(tokens[0])
    return milestone.initial_state(tokens[0], tokens[1])


def evolve(state: State, event: Event) -> State:
    if isinstance(state, Milestone):
        return milestone.evolve(state, event)
    return project.evolve(state, event)


def stamp(msg: Event, time: dt.datetime) -> Event:
    """Fill times a publisher may omit with the CloudEvent's own ``time`` (time comes in
    messages)."""
    match msg:
        case TaskCompleted(completed_at=None):
            return msgspec.structs.replace(msg, completed_at=time)
        case MilestoneAchieved(achieved_at=None):
            return msgspec.structs.replace(msg, achieved_at=time)
        case DeadlineReached(reached_at=None):
            return msgspec.structs.replace(msg, reached_at=time)
        case ApproversSet(set_at=None):
            return msgspec.structs.replace(msg, set_at=time)
        case MilestoneApproved(approved_at=None):
            return msgspec.structs.replace(msg, approved_at=time)
        case MilestoneApprovalRejected(rejected_at=None):
            return msgspec.structs.replace(msg, rejected_at=time)
    return msg


def decide_traced(msg: Event, states: Mapping[str, State]) -> Traced:
    """The events ``msg`` decides, each with its cause: the index of the event that caused it, or
    None for the message itself. ``states`` maps each subject of ``plan(msg)`` (target and reads)
    to its current state (the first event is the message's own fact; what a rule derives from it,
    e.g. ``MilestoneAchieved`` after the last ``TaskCompleted``, is caused by that fact)."""
    target = states[stream_subject(msg)]
    owner = states.get(project_subject(target.project_id))
    milestones = {s.milestone_id: s for s in states.values() if isinstance(s, Milestone)}
    if isinstance(target, Milestone):
        exists = True
        if isinstance(msg, MilestonePlanned):
            exists = isinstance(owner, Project) and owner.created
        events = milestone.decide(msg, target, project_exists=exists)
    else:
        events = project.decide(msg, target, milestones)
        owner = target
    traced: Traced = [(event, None if i == 0 else 0) for i, event in enumerate(events)]
    if (
        not isinstance(owner, Project)
        or not owner.dependencies
        and not isinstance(msg, DependencyAdded)
    ):
        return traced
    for i, event in enumerate(events):
        moved = None
        if isinstance(event, MilestoneRescheduled):
            moved = event.milestone_id
            milestones[moved] = milestone.evolve(milestones[moved], event)
        elif isinstance(event, DependencyAdded):  # as if the predecessor had just moved
            moved = event.depends_on
            owner = project.evolve(owner, event)
        if moved is not None:
            traced += project.consequences(owner, milestones, moved, i, len(traced))
    return traced


__all__ = ["Plan", "State", "Traced", "decide_traced", "evolve", "initial_state", "plan", "stamp"]
