"""MSPDI export, pure: the fixture plan imported, exported, read back by an independent reader
(MPXJ, Java through JPype) and by our own import (the round trip sends nothing)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from events import BaselineSet, DependencyAdded, MilestonePlanned, TaskAdded
from services.plans import current, export, mspdi
from services.plans.mapping import Current, import_plan
from tests.test_plans_mspdi import NOW, P, imported, stored


@pytest.fixture(scope="module")
def mpxj_reader():
    import jpype
    import mpxj  # noqa: F401  (puts MPXJ's jars on the class path)

    if not jpype.isJVMStarted():
        jpype.startJVM()
    from org.mpxj.reader import UniversalProjectReader

    return UniversalProjectReader


def exported_fixture() -> bytes:
    return export.mspdi(P, stored(imported()))


def test_mpxj_reads_the_same_milestones_dates_links_and_baselines(mpxj_reader, tmp_path: Path):
    path = tmp_path / "apollo.xml"
    path.write_bytes(exported_fixture())
    project = mpxj_reader().read(str(path))
    tasks = {str(t.getText(2)): t for t in project.getTasks() if t.getMilestone()}
    assert {
        k: (str(t.getName()), str(t.getFinish()), str(t.getText(1))) for k, t in tasks.items()
    } == {
        "uid-4": ("Design approved", "2026-10-13T17:00", "event"),
        "uid-8": ("Feature complete", "2027-01-15T17:00", "technical"),
        "uid-9": ("Security review", "2027-01-20T17:00", "time"),
        "uid-12": ("Launch", "2027-02-05T17:00", "time"),
    }
    assert str(tasks["uid-4"].getActualFinish()) == "2026-10-14T10:00"
    links = set()
    for key, t in tasks.items():
        for r in t.getPredecessors():
            pred = r.getPredecessorTask()
            if pred.getMilestone():
                lag = r.getLag()
                assert str(r.getType()) == "FS" and str(lag.getUnits()) == "ed"
                links.add((key, str(pred.getText(2)), float(lag.getDuration())))
    assert links == {
        ("uid-8", "uid-4", 14.0),
        ("uid-9", "uid-8", -3.0),
        ("uid-12", "uid-8", 7.0),
        ("uid-12", "uid-9", 15.0),
    }
    baselines = {
        key: (str(t.getBaselineFinish()), str(t.getBaselineFinish(1))) for key, t in tasks.items()
    }
    assert baselines == {
        "uid-4": ("2026-10-13T17:00", "2026-10-09T17:00"),
        "uid-8": ("2027-01-15T17:00", "2027-01-08T17:00"),
        "uid-9": ("2027-01-20T17:00", "None"),
        "uid-12": ("2027-02-05T17:00", "2027-01-29T17:00"),
    }
    phases = [str(t.getName()) for t in project.getTasks() if t.getSummary()]
    assert phases == ["Apollo", "Design", "Build", "Launch"]
    work = {
        str(t.getText(2)): str(t.getName())
        for t in project.getTasks()
        if not t.getSummary() and not t.getMilestone()
    }
    assert work == {
        "uid-2": "Sketches",
        "uid-3": "Review",
        "uid-6": "Backend",
        "uid-7": "Frontend",
        "uid-11": "Marketing",
    }


def test_import_export_import_sends_nothing():
    log = stored(imported())
    again = import_plan(mspdi.parse(export.mspdi(P, log)), P, current.from_events(log), NOW)
    assert again.events == [] and again.removed == []


def test_an_exported_plan_imports_into_a_new_project_as_the_same_plan():
    first: dict = {}
    for o in imported().events:
        first.setdefault(type(o.event), []).append(o.event)
    second = import_plan(mspdi.parse(exported_fixture()), P, Current(), NOW)
    again: dict = {}
    for o in second.events:
        again.setdefault(type(o.event), []).append(o.event)

    def milestones(events):
        return {(m.milestone_id, m.name, m.kind, m.due, m.phase) for m in events}

    assert milestones(again[MilestonePlanned]) == milestones(first[MilestonePlanned])
    assert set(again[DependencyAdded]) == set(first[DependencyAdded])
    assert again[BaselineSet] == first[BaselineSet]
    tasks = {(t.milestone_id, t.task_id, t.title, t.start, t.due) for t in again[TaskAdded]}
    assert tasks == {(t.milestone_id, t.task_id, t.title, t.start, t.due) for t in first[TaskAdded]}
    # the same milestone ids, so the same CloudEvent ids for what does not depend on the file's
    # row numbers: a repeat appends nothing
    ids = {o.id for o in imported().events}
    assert {o.id for o in second.events if isinstance(o.event, DependencyAdded)} <= ids


def test_dates_ms_project_cannot_hold_are_refused():
    log = stored(imported())
    position, planned = log[1]  # uid-4's MilestonePlanned
    assert isinstance(planned.data, MilestonePlanned)
    early = msgspec.structs.replace(planned.data, due=dt.date(1980, 5, 1))  # the contract's
    log[1] = (position, msgspec.structs.replace(planned, data=early))
    refused = "milestone uid-4's due date is 1980-05-01: MS Project takes dates from 1984-01-01"
    with pytest.raises(export.ExportError, match=refused):
        export.mspdi(P, log)


def test_baseline_names_become_ms_project_numbers():
    assert export.baseline_numbers(["v1", "Baseline 1", "Baseline", "v2"]) == {
        "Baseline 1": 1,
        "Baseline": 0,
        "v1": 2,
        "v2": 3,
    }
    many = [f"b{i}" for i in range(13)]
    assert len(export.baseline_numbers(many)) == 11  # MS Project keeps 11


def test_a_legacy_name_with_a_control_character_still_exports_valid_xml():
    log = stored(imported())
    position, planned = log[1]
    odd = msgspec.structs.replace(planned.data, name="with a \x00 NUL")
    log[1] = (position, msgspec.structs.replace(planned, data=odd))
    plan = mspdi.parse(export.mspdi(P, log))
    assert "with a \ufffd NUL" in {t.name for t in plan.tasks}
