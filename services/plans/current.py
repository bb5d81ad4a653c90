"""What a project holds before an import (``mapping.Current``), from its log or its report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from events import ProjectCreated
from services.domain import reporting
from services.plans.mapping import Current, CurrentMilestone


def from_events(events: Iterable[reporting.Positioned]) -> Current:
    """The project as its events fold (``services.domain.reporting.fold``, as the report does)."""
    events = list(events)
    folded = reporting.fold(events)
    return Current(
        exists=any(isinstance(stored.data, ProjectCreated) for _, stored in events),
        milestones={
            mid: CurrentMilestone(
                due=m.due,
                closed=m.cancelled or m.achieved_at is not None,
                achieved=m.achieved_at is not None,
                tasks=frozenset(m.tasks),
                predecessors=dict(m.predecessors),
                reschedules=m.reschedules,
            )
            for mid, m in folded.milestones.items()
        },
        baselines=frozenset(folded.baselines),
    )


def from_report(report: Mapping[str, Any] | None) -> Current:
    """The project as its report (``milestones.query.report``, JSON) shows it; None: it does not
    exist. The report names no tasks and no dependencies: an import then sends every task and
    dependency of the file again, with the same CloudEvent ids (a repeat appends nothing)."""
    if report is None:
        return Current()
    return Current(
        exists=True,
        milestones={
            line["milestone_id"]: CurrentMilestone(
                due=dt.date.fromisoformat(line["due"]),
                closed=bool(line["cancelled"] or line["achieved_on"]),
                achieved=bool(line["achieved_on"]),
                reschedules=int(line["reschedules"]),
            )
            for line in report["milestones"]
        },
        baselines=frozenset(report.get("baselines") or ()),
        complete=False,
    )
