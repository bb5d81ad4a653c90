"""MSPDI import against real servers: `milestones import` (its shell, in process) sends the
fixture plan through the intake; the same file again appends nothing; a moved plan appends
only reschedules; a bad file sends nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from events.subjects import EVENTS_STREAM
from services.cli.plans import SOURCE, import_command
from services.eventlog.log import EventLog
from services.plans import mspdi
from services.plans.mapping import KIND_ALIAS

EVENTS_PREFIX = "milestones.events."
FIXTURE = Path(__file__).parent / "data" / "plans" / "apollo.xml"


def args(plan: Path, **kw: object) -> argparse.Namespace:
    values = {
        "plan": str(plan),
        "project": "apollo",
        "dry_run": False,
        "cancel_removed": False,
        "source": SOURCE,
        "kind_field": KIND_ALIAS,
        "json": False,
    }
    return argparse.Namespace(**{**values, **kw})


async def appended(nc, after: int) -> list[dict]:
    js = nc.jetstream()
    end = await EventLog(nc).last_sequence()
    found = []
    for seq in range(after + 1, end + 1):
        msg = await js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.startswith(EVENTS_PREFIX):  # not the receipts beside them
            found.append(msgspec.json.decode(msg.data))
    return found


async def test_import_then_the_same_file_then_a_moved_plan(system, nc, settings, tmp_path, capsys):
    log = EventLog(nc)
    start = await log.last_sequence()
    assert await import_command(args(FIXTURE), settings) == 0
    first = await appended(nc, start)
    types = [e["type"] for e in first]
    assert types.count("MilestonePlanned") == 4
    assert types.count("TaskAdded") == 5
    assert types.count("DependencyAdded") == 4
    assert types.count("BaselineSet") == 2
    assert types.count("MilestoneAchieved") == 1
    baselines = {
        e["data"]["name"]: e["data"]["planned"] for e in first if e["type"] == "BaselineSet"
    }
    assert baselines["Baseline 1"] == {
        "uid-4": "2026-10-09",
        "uid-8": "2027-01-08",
        "uid-12": "2027-01-29",
    }  # the file's dates, not the current due dates
    lags = {
        (e["data"]["milestone_id"], e["data"]["depends_on"]): e["data"].get("lag_days", 0)
        for e in first
        if e["type"] == "DependencyAdded"
    }
    assert lags == {
        ("uid-8", "uid-4"): 14,
        ("uid-9", "uid-8"): -3,
        ("uid-12", "uid-8"): 7,
        ("uid-12", "uid-9"): 15,
    }
    end = await log.last_sequence()

    assert await import_command(args(FIXTURE), settings) == 0
    assert await log.last_sequence() == end, "the same file again appended something"

    moved = tmp_path / "moved.xml"
    moved.write_text(
        FIXTURE.read_text().replace(
            "<Finish>2027-02-05T17:00:00</Finish><Duration>PT0H0M0S</Duration>",
            "<Finish>2027-02-12T17:00:00</Finish><Duration>PT0H0M0S</Duration>",
        )
    )
    assert await import_command(args(moved), settings) == 0
    changes = await appended(nc, end)
    assert [(e["type"], e["data"]["milestone_id"], e["data"]["new_due"]) for e in changes] == [
        ("MilestoneRescheduled", "uid-12", "2027-02-12")
    ]
    assert changes[0]["data"]["reason"] == "plan import"
    end = await log.last_sequence()
    assert await import_command(args(moved), settings) == 0
    assert await log.last_sequence() == end

    # and back: a second reschedule (the id holds the value and the reschedules before it)
    assert await import_command(args(FIXTURE), settings) == 0
    back = await appended(nc, end)
    assert [(e["type"], e["data"]["new_due"]) for e in back] == [
        ("MilestoneRescheduled", "2027-02-05")
    ]


async def test_a_dry_run_and_a_bad_file_send_nothing(system, nc, settings, tmp_path, capsys):
    log = EventLog(nc)
    start = await log.last_sequence()
    assert await import_command(args(FIXTURE, dry_run=True), settings) == 0
    printed = capsys.readouterr().out
    assert "would send MilestonePlanned" in printed
    assert "dry run: 17 event(s) would be sent, none was" in printed
    bad = tmp_path / "bomb.xml"
    bad.write_text(
        '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]>'
        '<Project xmlns="http://schemas.microsoft.com/project"><Name>&a;</Name></Project>'
    )
    assert await import_command(args(bad), settings) == 1
    assert "declares a DTD" in capsys.readouterr().err
    cycle = tmp_path / "cycle.xml"
    cycle.write_text(
        FIXTURE.read_text().replace(
            "<Duration>PT40H0M0S</Duration></Task>\n    <Task><UID>3</UID>",
            "<Duration>PT40H0M0S</Duration><PredecessorLink><PredecessorUID>4</PredecessorUID>"
            "</PredecessorLink></Task>\n    <Task><UID>3</UID>",
        )
    )
    assert await import_command(args(cycle), settings) == 1
    assert "the links form a cycle" in capsys.readouterr().err
    assert await log.last_sequence() == start


async def test_the_exported_plan_imports_back_with_nothing_new(system, nc, settings, api, tmp_path):
    log = EventLog(nc)
    assert await import_command(args(FIXTURE), settings) == 0
    end = await log.last_sequence()
    response = await api.get("/projects/apollo/plan.xml")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert 'filename="apollo-plan.xml"' in response.headers["content-disposition"]
    plan = mspdi.parse(response.content)
    assert sorted(t.name for t in plan.tasks if t.milestone) == [
        "Design approved",
        "Feature complete",
        "Launch",
        "Security review",
    ]
    exported = tmp_path / "exported.xml"
    exported.write_bytes(response.content)
    assert await import_command(args(exported), settings) == 0
    assert await log.last_sequence() == end, "the round trip appended something"

    missing = await api.get("/projects/nowhere/plan.xml")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_an_admin_imports_over_http_with_a_source_of_their_own(
    system, nc, api, authenticator
):
    from services.auth.principal import Principal

    authenticator.add(
        "plan-admin", Principal(id="plan-admin", role="admin", sources=frozenset({"planning"}))
    )
    headers = {"authorization": "Bearer plan-admin", "content-type": "text/xml"}
    url = "/projects/apollo/import"
    log = EventLog(nc)
    start = await log.last_sequence()

    dry = await api.post(
        f"{url}?dry_run=true&source=planning", content=FIXTURE.read_bytes(), headers=headers
    )
    assert dry.status_code == 200, dry.text
    assert len(dry.json()["cloudevents"]) == 17 and await log.last_sequence() == start

    # a source the credential was not granted: refused by the intake, nothing appended
    other = await api.post(url, content=FIXTURE.read_bytes(), headers=headers)
    assert other.status_code == 403, other.text
    assert await log.last_sequence() == start

    done = await api.post(f"{url}?source=planning", content=FIXTURE.read_bytes(), headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["sent"] == 17
    end = await log.last_sequence()
    again = await api.post(f"{url}?source=planning", content=FIXTURE.read_bytes(), headers=headers)
    assert again.status_code == 200 and again.json()["sent"] == 0  # the log says it is all there
    assert await log.last_sequence() == end

    bad = await api.post(f"{url}?source=planning", content=b"<nope", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    assert "not XML" in bad.json()["error"]["message"]
    reader = await api.post(
        url, content=FIXTURE.read_bytes(), headers={"authorization": "Bearer test-reader-token"}
    )
    assert reader.status_code == 403
