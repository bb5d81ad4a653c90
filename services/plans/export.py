"""A project as an MS Project XML plan (MSPDI), from its events. Pure: events in, bytes out.

The log is folded as the report folds it (``services.domain.reporting.fold``): phases become
summary tasks, milestones zero-duration milestone tasks due on their current due date (an
achieved one with ``ActualFinish``), their tasks ordinary tasks linked to them, dependencies
finish-to-start links with the lag in elapsed days (``LagFormat`` 8, ``LinkLag`` = days × 14,400
tenths of a minute: read back 1:1), baselines the ``Baseline`` entries (``Baseline`` is number 0,
``Baseline N`` number N, other names the free numbers in the order they were set; MS Project
keeps 11), each milestone's and task's id in the text field aliased ``Milestones id`` (Text2)
and its kind in ``Milestone kind`` (Text1), which the import reads back. Cancelled milestones
are left out. MS Project takes dates from 1984 to 2149: a project with a date outside is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from events import ProjectCreated, TaskAdded
from services.domain import reporting
from services.plans.mapping import ID_ALIAS, KIND_ALIAS
from services.plans.mspdi import NS

KIND_FIELD = (188743731, "Text1")
ID_FIELD = (188743734, "Text2")
DATE_MIN, DATE_MAX = dt.date(1984, 1, 1), dt.date(2149, 12, 31)  # MS Project's range
BASELINES = 11  # Baseline, Baseline 1 ... Baseline 10
ELAPSED_DAYS = 8  # LagFormat "ed"
TENTHS_PER_ELAPSED_DAY = 14_400
WORKING_HOURS = 8
_MS_BASELINE = re.compile(r"^Baseline(?: (\d{1,2}))?$")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class ExportError(ValueError):
    """A project MS Project cannot hold: the message says what."""


def _in_range(value: dt.date, what: str) -> dt.date:
    if not DATE_MIN <= value <= DATE_MAX:
        raise ExportError(
            f"{what} is {value}: MS Project takes dates from {DATE_MIN} to {DATE_MAX}; "
            "move it or leave the plan export"
        )
    return value


def _at(day: dt.date, hour: int) -> str:
    return dt.datetime.combine(day, dt.time(hour)).isoformat()


def _weekdays(start: dt.date, finish: dt.date) -> int:
    days = (finish - start).days + 1
    return max(1, sum(1 for i in range(days) if (start + dt.timedelta(i)).weekday() < 5))


def baseline_numbers(names: Iterable[str]) -> dict[str, int]:
    """Baseline name -> MS Project baseline number (at most 11: the earliest set keep theirs)."""
    names = list(names)
    numbers: dict[str, int] = {}
    for name in names:
        if (m := _MS_BASELINE.match(name)) and int(m.group(1) or 0) < BASELINES:
            numbers.setdefault(name, int(m.group(1) or 0))
    free = [n for n in range(BASELINES) if n not in numbers.values()]
    for name in names:
        if name not in numbers and free:
            numbers[name] = free.pop(0)
    return numbers


class _Writer:
    def __init__(self, project_name: str) -> None:
        ET.register_namespace("", NS)
        self.root = ET.Element(f"{{{NS}}}Project")
        self.add(self.root, "SaveVersion", "14")
        self.add(self.root, "Name", f"{project_name}.xml")
        self.add(self.root, "Title", project_name)
        self.add(self.root, "MinutesPerDay", "480")
        self.add(self.root, "MinutesPerWeek", "2400")
        attrs = self.add(self.root, "ExtendedAttributes")
        for (field, name), alias in ((KIND_FIELD, KIND_ALIAS), (ID_FIELD, ID_ALIAS)):
            attr = self.add(attrs, "ExtendedAttribute")
            self.add(attr, "FieldID", str(field))
            self.add(attr, "FieldName", name)
            self.add(attr, "Alias", alias)
        self.tasks = self.add(self.root, "Tasks")
        self.uid = 0
        self.outline: list[int] = [0]

    @staticmethod
    def add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        el = ET.SubElement(parent, f"{{{NS}}}{tag}")
        if text is not None:
            el.text = _XML_INVALID.sub("\ufffd", text)  # a legacy NUL: XML 1.0 has no such char
        return el

    def task(self, name: str, level: int, **fields: str) -> tuple[int, ET.Element]:
        uid = self.uid
        self.uid += 1
        if level > 0:
            del self.outline[level:]
            while len(self.outline) < level:
                self.outline.append(0)
            self.outline[level - 1] += 1
        el = self.add(self.tasks, "Task")
        self.add(el, "UID", str(uid))
        self.add(el, "ID", str(uid))
        self.add(el, "Name", name)
        self.add(el, "OutlineLevel", str(level))
        number = ".".join(str(n) for n in self.outline[:level]) if level else "0"
        self.add(el, "OutlineNumber", number)
        for tag, text in fields.items():
            self.add(el, tag, text)
        return uid, el

    def extended(self, el: ET.Element, field: tuple[int, str], value: str) -> None:
        attr = self.add(el, "ExtendedAttribute")
        self.add(attr, "FieldID", str(field[0]))
        self.add(attr, "Value", value)

    def link(self, el: ET.Element, predecessor: int, lag_days: int = 0) -> None:
        link = self.add(el, "PredecessorLink")
        self.add(link, "PredecessorUID", str(predecessor))
        self.add(link, "Type", "1")
        self.add(link, "LinkLag", str(lag_days * TENTHS_PER_ELAPSED_DAY))
        self.add(link, "LagFormat", str(ELAPSED_DAYS))


class _Layout:
    """What goes where: the milestones shown, by phase, and the UID of every row."""

    def __init__(self, folded: reporting._Project) -> None:
        shown = sorted(
            (m for m in folded.milestones.values() if not m.cancelled),
            key=lambda m: (m.ord, m.due, m.milestone_id),
        )
        self.phases: dict[str | None, list[reporting._Milestone]] = {}
        for m in shown:
            self.phases.setdefault(m.planned.phase, []).append(m)
        self.uids: dict[str, int] = {}
        uid = 1  # 0 is the project's summary task
        for phase, members in self.phases.items():
            uid += phase is not None
            for m in members:
                uid += len(m.tasks)
                self.uids[m.milestone_id] = uid
                uid += 1


def _tasks(events: list[reporting.Positioned]) -> dict[tuple[str, str], TaskAdded]:
    """Each task as added (its title and start: the report's fold keeps neither)."""
    return {
        (s.data.milestone_id, s.data.task_id): s.data
        for _, s in events
        if isinstance(s.data, TaskAdded)
    }


def mspdi(project_id: str, events: Iterable[reporting.Positioned]) -> bytes:
    """The project's plan as MSPDI; ``ExportError`` names a date MS Project cannot hold."""
    events = list(events)
    name = next((s.data.name for _, s in events if isinstance(s.data, ProjectCreated)), project_id)
    folded = reporting.fold(events)
    layout = _Layout(folded)
    added = _tasks(events)
    numbers = baseline_numbers(folded.baselines)
    w = _Writer(name)
    w.task(name, 0, Summary="1")
    for phase, members in layout.phases.items():
        level = 1
        if phase is not None:
            dues = [_in_range(m.due, f"milestone {m.milestone_id}'s due date") for m in members]
            w.task(phase, 1, Summary="1", Start=_at(min(dues), 8), Finish=_at(max(dues), 17))
            level = 2
        for m in members:
            task_uids = [
                _task(w, m, tid, added.get((m.milestone_id, tid)), level) for tid in m.tasks
            ]
            el = _milestone(w, m, level)
            for task_uid in task_uids:
                w.link(el, task_uid)
            for pred, lag in sorted(m.predecessors.items()):
                if pred in layout.uids:  # a cancelled predecessor is not in the plan
                    w.link(el, layout.uids[pred], lag)
            w.extended(el, KIND_FIELD, m.planned.kind)
            w.extended(el, ID_FIELD, m.milestone_id)
            for base, number in sorted(numbers.items(), key=lambda kv: kv[1]):
                planned = folded.baselines[base].get(m.milestone_id)
                if planned is not None:
                    _in_range(planned, f"baseline {base!r} of milestone {m.milestone_id}")
                    b = w.add(el, "Baseline")
                    w.add(b, "Number", str(number))
                    w.add(b, "Start", _at(planned, 17))
                    w.add(b, "Finish", _at(planned, 17))
                    w.add(b, "Duration", "PT0H0M0S")
    ET.indent(w.root)
    return ET.tostring(w.root, encoding="UTF-8", xml_declaration=True)


def _task(
    w: _Writer, m: reporting._Milestone, tid: str, added: TaskAdded | None, level: int
) -> int:
    finish = _in_range(m.task_dues.get(tid, m.due), f"task {tid}'s due date")
    start = _in_range(added.start if added and added.start else finish, f"task {tid}'s start")
    start = min(start, finish)
    uid, el = w.task(
        added.title if added else tid,
        level,
        Start=_at(start, 8),
        Finish=_at(finish, 17),
        Duration=f"PT{_weekdays(start, finish) * WORKING_HOURS}H0M0S",
        Milestone="0",
        Summary="0",
        PercentComplete="100" if m.tasks[tid] else "0",
    )
    w.extended(el, ID_FIELD, tid)
    return uid


def _milestone(w: _Writer, m: reporting._Milestone, level: int) -> ET.Element:
    due = _in_range(m.due, f"milestone {m.milestone_id}'s due date")
    fields = {
        "Start": _at(due, 17),
        "Finish": _at(due, 17),
        "Duration": "PT0H0M0S",
        "Milestone": "1",
        "Summary": "0",
    }
    if m.achieved_at is not None:
        at = m.achieved_at.astimezone(dt.UTC).replace(tzinfo=None)  # MSPDI times: UTC here
        _in_range(at.date(), f"milestone {m.milestone_id}'s achievement")
        fields |= {
            "PercentComplete": "100",
            "ActualStart": at.isoformat(),
            "ActualFinish": at.isoformat(),
        }
    _, el = w.task(m.planned.name, level, **fields)
    return el
