"""The project aggregate: existence, the dependency graph, baselines, stakeholders. Pure."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from events import (
    BaselineSet,
    DependencyAdded,
    DependencyRemoved,
    ProjectCreated,
    StakeholderSubscribed,
    StatusReported,
)
from events.common import Event
from services.domain.errors import Rejected
from services.domain.milestone import Milestone


class Project(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str
    created: bool = False
    name: str = ""
    dependency_policy: str = "notify"
    # successor -> {predecessor: lag in days}
    dependencies: dict[str, dict[str, int]] = {}
    baselines: frozenset[str] = frozenset()
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
        case StakeholderSubscribed(stakeholder=who, url=url, milestone_id=m):
            return replace(state, stakeholders=state.stakeholders | {(who, url, m)})
    return state


def cycle_path(deps: Mapping[str, Mapping[str, int]], successor: str, predecessor: str) -> list[str] | None:
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


def decide(msg: Event, state: Project, milestones: Mapping[str, Milestone]) -> list[Event]:
    """``milestones`` holds the states the message refers to (see ``services.domain.reads``)."""
    match msg:
        case ProjectCreated() if state.created:
            raise Rejected("conflict", f"project {state.project_id} already exists")
        case ProjectCreated():
            return [msg]
        case _ if not state.created:
            raise Rejected(
                "not_found", f"project {state.project_id} does not exist: send ProjectCreated first"
            )

        case DependencyAdded(milestone_id=m, depends_on=d) if m == d:
            raise Rejected("invalid", f"milestone {m} cannot depend on itself")
        case DependencyAdded(milestone_id=m, depends_on=d, lag_days=lag):
            _require_planned(milestones, m, d)
            if state.dependencies.get(m, {}).get(d) == lag:
                return []
            path = cycle_path(state.dependencies, m, d)
            if path is not None:
                loop = " -> ".join([m, *path])
                raise Rejected("rejected", f"dependency would close a cycle: {loop}")
            return [msg]
        case DependencyRemoved(milestone_id=m, depends_on=d):
            if d not in state.dependencies.get(m, {}):
                raise Rejected("not_found", f"milestone {m} does not depend on {d}")
            return [msg]

        case BaselineSet(name=name) if name in state.baselines:
            raise Rejected("conflict", f"baseline {name!r} already exists: choose a new name")
        case BaselineSet():
            planned = {
                mid: ms.due
                for mid, ms in sorted(milestones.items())
                if ms.planned and not ms.cancelled and ms.due is not None
            }
            return [msgspec.structs.replace(msg, planned=planned)]

        case StakeholderSubscribed(milestone_id=m) if m is not None:
            _require_planned(milestones, m)
            return [] if (msg.stakeholder, msg.url, m) in state.stakeholders else [msg]
        case StakeholderSubscribed():
            return [] if (msg.stakeholder, msg.url, None) in state.stakeholders else [msg]

        case StatusReported(milestone_id=m) if m is not None:
            _require_planned(milestones, m)
            return [msg]
        case StatusReported():
            return [msg]
    raise Rejected("unknown_type", f"{type(msg).__name__} is not a project message")


def _require_planned(milestones: Mapping[str, Milestone], *ids: str) -> None:
    for mid in ids:
        ms = milestones.get(mid)
        if ms is None or not ms.planned:
            raise Rejected("not_found", f"milestone {mid} is not planned in this project")
