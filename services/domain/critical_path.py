"""The critical path: which milestones drive the project's finish, and how much slack
(``float_days``) each one has before the finish moves.

Pure. Milestones are zero-duration points joined by finish-to-start dependencies with a lag
(negative: a lead). ``critical_path(nodes, target)`` computes (also in the README):

- *early finish*: ``early(m) = max(m.earliest, early(p) + lag(p->m) for each predecessor p)``,
  where ``earliest`` is what the caller says m can finish on by itself (its forecast or expected
  finish). A done milestone's early finish is its ``earliest`` (the achieved date) alone: the
  fact is not moved by the plan;
- *finish*: the ``target`` when one is set, else the latest due date among the final milestones
  (those no milestone depends on);
- *late finish*: ``late(m) = finish`` for a final milestone, else
  ``min(late(s) - lag(m->s) for each successor s)``;
- *float*: ``late(m) - early(m)`` in days; negative when the finish can no longer be met;
- *project float*: the least float over the milestones not done (None when none is open);
- *critical*: not done, and a float no greater than ``max(0, project float)`` — the chain with
  the least slack drives the finish even when every float is positive, and every milestone
  already behind (float <= 0) is critical;
- *drives*: the final milestone whose late finish binds m: follow the successor that gives
  ``late(m)`` (ties: the smallest milestone id) until a final milestone — so slipping m by
  more than its float moves that milestone.

Predecessors that are not among the nodes are ignored (the caller leaves cancelled milestones
out); a milestone id given twice counts once, the last. The order is Kahn's (predecessors
first, ready milestones by id), iterative, so chains of any length work. Dependencies cannot
form a cycle (``DependencyAdded`` refuses one) but bad data may: when every milestone left
waits on another, walk back from the smallest id left, always to the smallest-id predecessor
left, until a milestone repeats; that closes a cycle, and the dependency into the cycle's
smallest id from its predecessor on the cycle is ignored (in both passes). Repeat until none
is left. Dates saturate at ``date.min``/``date.max`` like ``services.domain.dates.add_days``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from heapq import heappop, heappush

import msgspec

_MIN = dt.date.min.toordinal()
_MAX = dt.date.max.toordinal()


class Node(msgspec.Struct, frozen=True, kw_only=True):
    milestone_id: str
    due: dt.date
    earliest: dt.date
    predecessors: dict[str, int]  # predecessor id -> lag in days (negative: a lead)
    done: bool = False


class Slack(msgspec.Struct, frozen=True, kw_only=True):
    milestone_id: str
    early_finish: dt.date
    late_finish: dt.date
    float_days: int
    critical: bool
    drives: str


class CriticalPath(msgspec.Struct, frozen=True, kw_only=True):
    finish: dt.date | None
    target: dt.date | None
    milestones: list[Slack]  # topological order, ties by milestone id
    chain: list[str]  # the critical milestones, in the same order
    project_float_days: int | None


Edges = list[list[tuple[int, int]]]  # per milestone index: (other index, lag)


def _clamp(ordinal: int) -> int:
    return _MIN if ordinal < _MIN else _MAX if ordinal > _MAX else ordinal


def _cut_one_cycle(preds: Edges, succs: Edges, placed: bytearray, start: int) -> int:
    """Drop one dependency on a cycle among the unplaced milestones (see the module docstring);
    return the milestone it pointed into. Every unplaced milestone has an unplaced
    predecessor, so the walk ends on a repeat."""
    path, seen, at = [start], {start: 0}, start
    while True:
        back = min(p for p, _ in preds[at] if not placed[p])
        if back in seen:
            break
        seen[back] = len(path)
        path.append(back)
        at = back
    cycle = path[seen[back] :]  # cycle[k + 1] is a predecessor of cycle[k], cycle[0] of the last
    into = min(cycle)
    k = cycle.index(into)
    source = cycle[(k + 1) % len(cycle)]
    preds[into] = [(p, lag) for p, lag in preds[into] if p != source]
    succs[source] = [(s, lag) for s, lag in succs[source] if s != into]
    return into


def topological(preds: Edges) -> tuple[list[int], Edges, Edges]:
    """Kahn's order over milestone indices (index order is id order), cycles cut; the
    predecessor and successor lists without the cut dependencies. ``preds`` is not changed (a
    cut replaces a milestone's list in a copy of the outer one)."""
    n = len(preds)
    preds = list(preds)
    succs: Edges = [[] for _ in range(n)]
    for s, ps in enumerate(preds):
        for p, lag in ps:
            succs[p].append((s, lag))
    waiting = [len(ps) for ps in preds]
    ready = [i for i in range(n) if not waiting[i]]  # ascending, so already a heap
    placed = bytearray(n)
    order: list[int] = []
    first_unplaced = 0
    while True:
        while ready:
            i = heappop(ready)
            order.append(i)
            placed[i] = 1
            for s, _ in succs[i]:
                waiting[s] -= 1
                if not waiting[s]:
                    heappush(ready, s)
        if len(order) == n:
            return order, preds, succs
        while placed[first_unplaced]:
            first_unplaced += 1
        into = _cut_one_cycle(preds, succs, placed, first_unplaced)
        waiting[into] -= 1
        if not waiting[into]:
            heappush(ready, into)


def ordered(graph: Mapping[str, Mapping[str, int]]) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Milestone ids (``graph``: id -> predecessor id -> lag) in the critical path's order,
    and the dependencies kept: those on unknown milestones dropped, cycles cut the same way."""
    ids = sorted(graph)
    index = {mid: i for i, mid in enumerate(ids)}
    preds = [
        [(index[p], lag) for p, lag in sorted(graph[mid].items()) if p in index] for mid in ids
    ]
    order, kept, _ = topological(preds)
    return [ids[i] for i in order], {
        ids[i]: {ids[p]: lag for p, lag in kept[i]} for i in range(len(ids))
    }


def critical_path(nodes: Sequence[Node], target: dt.date | None = None) -> CriticalPath:
    """Early and late finish, float and criticality of every node (see the module docstring)."""
    by_id = {node.milestone_id: node for node in nodes}
    if not by_id:
        return CriticalPath(
            finish=None, target=target, milestones=[], chain=[], project_float_days=None
        )
    ids = sorted(by_id)
    index = {mid: i for i, mid in enumerate(ids)}
    todo = [by_id[mid] for mid in ids]
    order, preds, succs = topological(
        [[(index[p], lag) for p, lag in n.predecessors.items() if p in index] for n in todo]
    )

    early = [n.earliest.toordinal() for n in todo]
    for i in order:
        if todo[i].done:
            continue
        best = early[i]
        for p, lag in preds[i]:
            if early[p] + lag > best:
                best = early[p] + lag
        early[i] = best if _MIN <= best <= _MAX else _clamp(best)

    if target is not None:
        finish = target.toordinal()
    else:
        finish = max(todo[i].due.toordinal() for i in range(len(ids)) if not succs[i])
    late = [finish] * len(ids)
    drives = list(range(len(ids)))
    for i in reversed(order):
        if not succs[i]:
            continue
        via, lag = succs[i][0]  # successors are in id order: the first of equals wins
        best = late[via] - lag
        for s, lag in succs[i]:
            if late[s] - lag < best:
                best, via = late[s] - lag, s
        late[i] = best if _MIN <= best <= _MAX else _clamp(best)
        drives[i] = drives[via]

    floats = [late[i] - early[i] for i in range(len(ids))]
    open_floats = [floats[i] for i in range(len(ids)) if not todo[i].done]
    project_float = min(open_floats) if open_floats else None
    bar = max(0, project_float) if project_float is not None else 0
    fromordinal = dt.date.fromordinal
    slacks = [
        Slack(
            milestone_id=ids[i],
            early_finish=fromordinal(early[i]),
            late_finish=fromordinal(late[i]),
            float_days=floats[i],
            critical=not todo[i].done and floats[i] <= bar,
            drives=ids[drives[i]],
        )
        for i in order
    ]
    return CriticalPath(
        finish=fromordinal(finish),
        target=target,
        milestones=slacks,
        chain=[s.milestone_id for s in slacks if s.critical],
        project_float_days=project_float,
    )
