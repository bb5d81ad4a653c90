"""The project aggregate: existence, the dependency graph, baselines, stakeholders. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec

from events import (
    BaselineSet,
    DependencyAdded,
    DependencyRemoved,
    DependencyViolated,
    MilestoneRescheduled,
    ProjectCreated,
    ProjectTargetSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
    UnhandledEvent,
)
from events.common import Event, MilestoneEvent
from events.errors import Rejected
from services.domain.dates import add_days
from services.domain.milestone import Milestone


class Project(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str
    created: bool = False
    name: str = ""
    dependency_policy: str = "notify"
    # successor -> {predecessor: lag in days}
    dependencies: dict[str, dict[str, int]] = {}
    baselines: frozenset[str] = frozenset()
    target: dt.date | None = None  # the finish the critical path is measured against
    stakeholders: frozenset[tuple[str, str, str | None]] = frozenset()


def initial_state(project_id: str) -> Project:
    return Project(project_id=project_id)


def evolve(state: Project, event: Event) -> Project:
    replace = msgspec.structs.replace
    match event:
        case ProjectCreated(name=name, dependency_policy=policy):
            return replace(state, created=True, name=name, dependency_policy=policy)
        case DependencyAdded(milestone_id=m, depends_on=d, lag_days=lag):
            deps = {**state.dependencies, m: {**state.dependencies.get(m, {}), d: lag}}
            return replace(state, dependencies=deps)
        case DependencyRemoved(milestone_id=m, depends_on=d):
            remaining = {k: v for k, v in state.dependencies.get(m, {}).items() if k != d}
            return replace(state, dependencies={**state.dependencies, m: remaining})
        case BaselineSet(name=name):
            return replace(state, baselines=state.baselines | {name})
        case ProjectTargetSet(target=target):
            return replace(state, target=target)
        case StakeholderSubscribed(stakeholder=who, url=url, milestone_id=m):
            return replace(state, stakeholders=state.stakeholders | {(who, url, m)})
        case StakeholderUnsubscribed(stakeholder=who, url=url, milestone_id=m):
            return replace(state, stakeholders=state.stakeholders - {(who, url, m)})
        case StatusReported():
            return state  # a person's view: no rule of the project depends on it
        case MilestoneEvent():
            return state  # a milestone's own fact, not the project's
    raise UnhandledEvent(type(event).__name__, "the project's evolve")


def cycle_path(
    deps: Mapping[str, Mapping[str, int]], successor: str, predecessor: str
) -> list[str] | None:
    """The path predecessor -> ... -> successor through existing edges, if adding
    successor-depends-on-predecessor would close a cycle."""
    # Edges point from a successor to its predecessors; a cycle exists when the new
    # predecessor already (transitively) depends on the successor.
    stack: list[tuple[str, list[str]]] = [(predecessor, [predecessor])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == successor:
            return path
        if node in seen:
            continue
        seen.add(node)
        for nxt in sorted(deps.get(node, {})):
            stack.append((nxt, [*path, nxt]))
    return None


Traced = list[tuple[Event, int | None]]  # an event and the index of the event that caused it


def _successors(state: Project) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for succ, preds in sorted(state.dependencies.items()):
        for pred, lag in sorted(preds.items()):
            out.setdefault(pred, []).append((succ, lag))
    return out


def _downstream(succs: Mapping[str, list[tuple[str, int]]], start: str) -> list[str]:
    """Milestones reachable from ``start`` through successor edges, in topological order
    (iterative: a chain may be longer than Python's recursion limit; the graph is acyclic,
    DependencyAdded refuses cycles)."""
    order: list[str] = []
    visited: set[str] = set()
    stack: list[tuple[str, bool]] = [(start, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)  # after everything downstream of it: reversed, a topological order
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        stack.extend(
            (succ, False) for succ, _ in reversed(succs.get(node, [])) if succ not in visited
        )
    return order[::-1][1:]


def _violation(
    project_id: str, succ: Milestone, pred: str, finish: dt.date, lag: int, due: dt.date
) -> DependencyViolated | None:
    earliest = add_days(finish, lag)  # saturates: 9999-12-31 + lag stays 9999-12-31
    if earliest <= due or succ.violations.get(pred) == earliest:
        return None  # satisfied, or this very violation was reported already
    return DependencyViolated(
        project_id=project_id,
        milestone_id=succ.milestone_id,
        depends_on=pred,
        predecessor_finish=finish,
        lag_days=lag,
        due=due,
        earliest=earliest,
    )


def consequences(
    state: Project, milestones: Mapping[str, Milestone], moved: str, cause: int, offset: int
) -> Traced:
    """What the dependencies make of ``moved`` finishing when ``milestones[moved]`` says (it was
    just rescheduled, or a dependency was just added to it). ``cause`` is the index of the event
    that moved it (or added the dependency); ``offset`` the index the first new event gets.

    - ``moved`` itself now due before one of its predecessors allows: ``DependencyViolated``
      for it (a person's explicit date is never overridden, whatever the policy).
    - its successors: policy ``notify`` gives ``DependencyViolated`` for each one now due too
      early; policy ``shift`` reschedules each to the first date its predecessors allow, in
      topological order through the whole downstream graph, each reschedule caused by the
      reschedule (or the message) of the predecessor that bound it.
    Closed (achieved, cancelled) and unplanned successors are left alone.
    """
    out: Traced = []
    me = milestones.get(moved)
    if me is None or me.finish is None:
        return out
    own_due = None if me.closed else me.due
    for pred, lag in sorted(state.dependencies.get(moved, {}).items()) if own_due else ():
        p = milestones.get(pred)
        if p is None or p.cancelled or p.finish is None or own_due is None:
            continue
        if (v := _violation(state.project_id, me, pred, p.finish, lag, own_due)) is not None:
            out.append((v, cause))

    succs = _successors(state)
    if state.dependency_policy != "shift":
        for succ_id, lag in succs.get(moved, ()):
            succ = milestones.get(succ_id)
            if succ is None or not succ.planned or succ.closed or succ.due is None:
                continue
            if (
                v := _violation(state.project_id, succ, moved, me.finish, lag, succ.due)
            ) is not None:
                out.append((v, cause))
        return out

    finish = {
        mid: ms.finish
        for mid, ms in milestones.items()
        if ms.finish is not None and not ms.cancelled
    }
    caused_by: dict[str, int] = {moved: cause}
    preds_of = state.dependencies
    for node in _downstream(succs, moved):
        ms = milestones.get(node)
        if ms is None or not ms.planned or ms.closed or ms.due is None:
            continue
        binding: tuple[dt.date, str, int] | None = None
        for pred, lag in sorted(preds_of.get(node, {}).items()):
            if pred in finish:
                earliest = add_days(finish[pred], lag)
                if binding is None or earliest > binding[0]:
                    binding = (earliest, pred, lag)
        if binding is None or binding[0] <= ms.due or binding[1] not in caused_by:
            continue  # satisfied, or bound by a predecessor this move did not touch
        earliest, pred, lag = binding
        out.append(
            (
                MilestoneRescheduled(
                    project_id=state.project_id,
                    milestone_id=node,
                    new_due=earliest,
                    old_due=ms.due,
                    reason=f"shifted by dependency: {pred} finishes {finish[pred].isoformat()}"
                    + (f" + {lag} days lag" if lag else ""),
                ),
                caused_by[pred],
            )
        )
        caused_by[node] = offset + len(out) - 1
        finish[node] = earliest
    return out


def decide(msg: Event, state: Project, milestones: Mapping[str, Milestone]) -> list[Event]:
    """``milestones`` holds the states the message refers to (the plan of the message,
    ``services.domain.decider.plan``, names them)."""
    match msg:
        case MilestoneEvent():
            raise Rejected("unknown_type", f"{type(msg).__name__} is a milestone message")
        case ProjectCreated() if state.created:
            raise Rejected("conflict", f"project {state.project_id} already exists")
        case ProjectCreated():
            return [msg]
        case _ if not state.created:
            raise Rejected(
                "not_found", f"project {state.project_id} does not exist: send ProjectCreated first"
            )
        case DependencyAdded():
            return _add_dependency(msg, state, milestones)
        case DependencyRemoved(milestone_id=m, depends_on=d):
            if d not in state.dependencies.get(m, {}):
                raise Rejected("not_found", f"milestone {m} does not depend on {d}")
            return [msg]
        case BaselineSet():
            return _set_baseline(msg, state, milestones)
        case ProjectTargetSet(target=target):
            return [] if target == state.target else [msg]  # a repeat changes nothing
        case StakeholderSubscribed():
            return _subscribe(msg, state, milestones)
        case StakeholderUnsubscribed():
            return _unsubscribe(msg, state)
        case StatusReported(milestone_id=m):
            if m is not None:
                _require_planned(milestones, m)
            return [msg]
    raise UnhandledEvent(type(msg).__name__, "the project's decide")


def _add_dependency(
    msg: DependencyAdded, state: Project, milestones: Mapping[str, Milestone]
) -> list[Event]:
    m, d = msg.milestone_id, msg.depends_on
    if m == d:
        raise Rejected("invalid", f"milestone {m} cannot depend on itself")
    _require_planned(milestones, m, d)
    if state.dependencies.get(m, {}).get(d) == msg.lag_days:
        return []
    path = cycle_path(state.dependencies, m, d)
    if path is not None:
        loop = " -> ".join([m, *path])
        raise Rejected("rejected", f"dependency would close a cycle: {loop}")
    return [msg]


def _set_baseline(
    msg: BaselineSet, state: Project, milestones: Mapping[str, Milestone]
) -> list[Event]:
    if msg.name in state.baselines:
        raise Rejected("conflict", f"baseline {msg.name!r} already exists: choose a new name")
    if msg.planned:  # a plan's own baseline (an MSPDI import): its dates, for planned milestones
        unknown = sorted(m for m in msg.planned if not _planned(milestones, m))
        if unknown:
            raise Rejected(
                "not_found",
                f"baseline {msg.name!r} names milestones not planned in this project: "
                + ", ".join(unknown[:10]),
            )
        return [msg]
    planned = {
        mid: ms.due
        for mid, ms in sorted(milestones.items())
        if ms.planned and not ms.cancelled and ms.due is not None
    }
    return [msgspec.structs.replace(msg, planned=planned)]


def _subscribe(
    msg: StakeholderSubscribed, state: Project, milestones: Mapping[str, Milestone]
) -> list[Event]:
    if msg.milestone_id is not None:
        _require_planned(milestones, msg.milestone_id)
    return [] if (msg.stakeholder, msg.url, msg.milestone_id) in state.stakeholders else [msg]


def _unsubscribe(msg: StakeholderUnsubscribed, state: Project) -> list[Event]:
    who, url, m = msg.stakeholder, msg.url, msg.milestone_id
    if (who, url, m) not in state.stakeholders:
        scope = f"milestone {m}" if m else f"project {state.project_id}"
        raise Rejected("not_found", f"{who} is not subscribed to {scope} at {url}")
    return [msg]


def _planned(milestones: Mapping[str, Milestone], mid: str) -> bool:
    ms = milestones.get(mid)
    return ms is not None and ms.planned


def _require_planned(milestones: Mapping[str, Milestone], *ids: str) -> None:
    for mid in ids:
        ms = milestones.get(mid)
        if ms is None or not ms.planned:
            raise Rejected("not_found", f"milestone {mid} is not planned in this project")
