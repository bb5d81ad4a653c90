"""Calendar feeds (issue 17, item 3; README "Calendar feeds"): the VCALENDAR as RFC 5545 wants it
(read back by ``icalendar`` and by ``vobject``, two independent parsers), and the feeds served
by the real services: a reschedule raises SEQUENCE under the same UID, a cancellation says
CANCELLED, a feed token travels in the URL to its projects only and dies with its credential.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sys
from typing import Any

import httpx
import icalendar
import pytest
import vobject

from services.app.http import build_http_app
from services.auth.principal import Principal
from services.query.calendar import FeedProject, calendar, uid
from tests.conftest import (
    TEST_TOKENS,
    auth_headers,
    caught_up,
    cli_env,
    cloudevent,
    plan_project,
    request,
    wait_for,
)

STAMP = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
BASE = "https://milestones.example"


# -- the VCALENDAR, pure ---------------------------------------------------------------------------
def row(milestone_id: str = "m1", **changed: Any) -> dict[str, Any]:
    """A judged status row, as the status query answers it (the fields the feed reads)."""
    return {
        "project_id": "atlas",
        "milestone_id": milestone_id,
        "name": "Beta release",
        "kind": "event",
        "phase": "build",
        "due": dt.date(2026, 12, 1),
        "first_due": dt.date(2026, 12, 1),
        "reschedules": 0,
        "achieved_at": None,
        "cancelled": False,
        "health": "on_track",
        "health_reasons": ["on track: 2 of 3 tasks done"],
        "expected_finish": dt.date(2026, 12, 1),
        "forecast": None,
        "forecast_low": None,
        "forecast_high": None,
        "tasks_total": 3,
        "tasks_done": 2,
        "progress": 66,
        "updated_at": dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC),
        **changed,
    }


def feed(*rows: dict[str, Any], reminder: int | None = None, name: str = "Atlas") -> bytes:
    return calendar(
        [FeedProject("atlas", name, list(rows))],
        name=f"{name} milestones",
        base_url=BASE + "/",
        stamp=STAMP,
        reminder_days=reminder,
    )


def events_of(body: bytes) -> dict[str, icalendar.Event]:
    cal = icalendar.Calendar.from_ical(body)
    return {str(e["UID"]): e for e in cal.walk("VEVENT")}


def test_one_all_day_event_per_milestone_with_what_the_status_says():
    body = feed(
        row("m1"),
        row(
            "m2",
            name="Launch",
            due=dt.date(2027, 1, 15),
            health="at_risk",
            health_reasons=["predecessor m1 is late"],
            expected_finish=dt.date(2027, 1, 20),
            forecast=dt.date(2027, 1, 22),
            forecast_low=dt.date(2027, 1, 18),
            forecast_high=dt.date(2027, 1, 30),
        ),
    )
    cal = icalendar.Calendar.from_ical(body)
    assert str(cal["VERSION"]) == "2.0" and str(cal["PRODID"]).startswith("-//Milestones//")
    assert str(cal["CALSCALE"]) == "GREGORIAN" and str(cal["METHOD"]) == "PUBLISH"
    assert str(cal["X-WR-CALNAME"]) == "Atlas milestones"
    found = events_of(body)
    assert set(found) == {"m1.atlas@milestones", "m2.atlas@milestones"}
    launch = found["m2.atlas@milestones"]
    assert launch.decoded("DTSTART") == dt.date(2027, 1, 15)  # a date: an all-day event
    assert launch.decoded("DTEND") == dt.date(2027, 1, 16)  # exclusive
    assert "VALUE=DATE" in body.decode() and launch.decoded("DTSTAMP") == STAMP
    assert str(launch["SUMMARY"]) == "Launch"
    assert str(launch["STATUS"]) == "CONFIRMED" and int(launch["SEQUENCE"]) == 0
    assert launch["CATEGORIES"].cats == ["at_risk"]
    assert str(launch["URL"]) == f"{BASE}/ui/projects/atlas/milestones/m2"
    text = str(launch["DESCRIPTION"])
    assert text.startswith("Health: at risk\n- predecessor m1 is late\n")
    assert "Expected finish: 2027-01-20" in text
    assert "Forecast: 2027-01-22 (2027-01-18 to 2027-01-30)" in text
    assert f"{BASE}/ui/projects/atlas/milestones/m2" in text
    assert "VALARM" not in body.decode()  # no reminder unless asked


def test_the_uid_is_stable_and_each_reschedule_raises_the_sequence():
    before = events_of(feed(row()))
    moved = row(due=dt.date(2026, 12, 8), reschedules=1)
    after = events_of(feed(moved))
    assert set(before) == set(after) == {uid("atlas", "m1")}
    event = after[uid("atlas", "m1")]
    assert int(event["SEQUENCE"]) == 1 and event.decoded("DTSTART") == dt.date(2026, 12, 8)
    assert "first planned 2026-12-01, rescheduled 1 time" in str(event["DESCRIPTION"])
    twice = events_of(feed(row(due=dt.date(2026, 12, 15), reschedules=2)))
    assert int(twice[uid("atlas", "m1")]["SEQUENCE"]) == 2


def test_cancelled_and_achieved_milestones_are_marked():
    achieved_at = dt.datetime(2026, 11, 30, 16, 0, tzinfo=dt.UTC)
    found = events_of(
        feed(
            row("done", achieved_at=achieved_at, health="achieved", health_reasons=["on time"]),
            row("gone", cancelled=True, reschedules=1, health="cancelled"),
        )
    )
    done, gone = found[uid("atlas", "done")], found[uid("atlas", "gone")]
    assert str(done["SUMMARY"]) == "Beta release ✓ achieved"
    assert str(done["STATUS"]) == "CONFIRMED" and "Achieved: 2026-11-30" in str(done["DESCRIPTION"])
    assert str(gone["SUMMARY"]) == "Beta release (cancelled)"
    assert str(gone["STATUS"]) == "CANCELLED"
    assert int(gone["SEQUENCE"]) == 2  # the cancellation is a revision too


def test_a_reminder_is_an_alarm_days_before_each_open_milestone():
    found = events_of(
        feed(row("open"), row("done", achieved_at=STAMP), row("gone", cancelled=True), reminder=3)
    )
    alarms = found[uid("atlas", "open")].walk("VALARM")
    assert len(alarms) == 1
    assert str(alarms[0]["ACTION"]) == "DISPLAY" and alarms[0]["DESCRIPTION"]
    assert alarms[0].decoded("TRIGGER") == -dt.timedelta(days=3)
    assert not found[uid("atlas", "done")].walk("VALARM")
    assert not found[uid("atlas", "gone")].walk("VALARM")
    with pytest.raises(ValueError):
        feed(row(), reminder=31)


def test_text_is_escaped_and_long_lines_folded_at_75_octets():
    name = "Früh, Ünïcödé; «Zulassung» \\ Überprüfung der Prüfstände " * 3
    reasons = ["line one; with, commas", "and a second\nline"]
    body = feed(row(name=name.strip(), health_reasons=reasons), name="Ätlas; Ü, Prüfung")
    lines = body.split(b"\r\n")
    assert body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in lines) <= 75
    assert any(line.startswith(b" ") for line in lines)  # folded
    assert b"SUMMARY:Fr\xc3\xbch\\, \xc3\x9cn\xc3\xafc\xc3\xb6d\xc3\xa9\\; " in body
    body.decode("utf-8")  # a fold never splits a character
    event = events_of(body)[uid("atlas", "m1")]
    assert str(event["SUMMARY"]) == name.strip()
    assert "- line one; with, commas\n- and a second\nline" in str(event["DESCRIPTION"])
    cal = icalendar.Calendar.from_ical(body)
    assert str(cal["X-WR-CALNAME"]) == "Ätlas; Ü, Prüfung milestones"
    # the second parser agrees
    parsed = vobject.readOne(body.decode())
    assert parsed.vevent.summary.value == name.strip()
    assert "- and a second\nline" in parsed.vevent.description.value


def test_vobject_reads_the_same_feed():
    body = feed(row("m1", reschedules=2, due=dt.date(2027, 2, 1)), row("m2", cancelled=True))
    parsed = vobject.readOne(body.decode())
    assert parsed.version.value == "2.0"
    by_uid = {e.uid.value: e for e in parsed.vevent_list}
    m1 = by_uid["m1.atlas@milestones"]
    assert m1.dtstart.value == dt.date(2027, 2, 1) and m1.dtend.value == dt.date(2027, 2, 2)
    assert m1.sequence.value == "2" and m1.status.value == "CONFIRMED"
    assert by_uid["m2.atlas@milestones"].status.value == "CANCELLED"


# -- the feeds, served -----------------------------------------------------------------------------
def plain_client(app) -> httpx.AsyncClient:
    """No credential unless the request carries one (a calendar client sends none)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_of(system, authenticator):
    return build_http_app(
        system.intake,
        max_body=256 * 1024,
        authenticator=authenticator,
        extra_handlers=system.http_handlers,
    )


def both_parsers(body: bytes) -> dict[str, tuple[int, dt.date, str]]:
    """UID -> (SEQUENCE, DTSTART, STATUS), read by icalendar and by vobject, which must agree."""
    first = {
        uid_: (int(e["SEQUENCE"]), e.decoded("DTSTART"), str(e["STATUS"]))
        for uid_, e in events_of(body).items()
    }
    second = {
        e.uid.value: (int(e.sequence.value), e.dtstart.value, e.status.value)
        for e in vobject.readOne(body.decode()).vevent_list
    }
    assert first == second
    return first


async def send(nc, events: list[dict]) -> int:
    reply = await request(nc, events)
    assert reply.accepted, reply
    return reply.events[-1].position


@pytest.fixture
async def planned(system, nc, db_url):
    """Project p1 with milestones m1 and m2, project p2 with m3; projected."""
    events = plan_project("p1", "m1")
    events.append(
        cloudevent(
            "MilestonePlanned",
            {
                "project_id": "p1",
                "milestone_id": "m2",
                "name": "Launch, at last",
                "kind": "time",
                "due": "2027-01-15",
            },
        )
    )
    position = await send(nc, events + plan_project("p2", "m3"))
    await caught_up(db_url, position)
    return system


async def test_a_feed_token_reads_its_projects_feed_and_a_reschedule_raises_sequence(
    planned, nc, db_url, authenticator
):
    authenticator.add("feed-p1", Principal(id="feed-1", role="feed", projects=frozenset({"p1"})))
    async with plain_client(app_of(planned, authenticator)) as http:
        r = await http.get("/projects/p1/milestones.ics?token=feed-p1")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/calendar; charset=utf-8"
        assert r.headers["content-disposition"] == 'inline; filename="p1-milestones.ics"'
        before = both_parsers(r.content)
        assert before == {
            "m1.p1@milestones": (0, dt.date(2026, 12, 1), "CONFIRMED"),
            "m2.p1@milestones": (0, dt.date(2027, 1, 15), "CONFIRMED"),
        }
        cal = icalendar.Calendar.from_ical(r.content)
        assert str(cal["X-WR-CALNAME"]) == "Project milestones"
        m2 = events_of(r.content)["m2.p1@milestones"]
        assert str(m2["SUMMARY"]) == "Launch, at last"
        assert str(m2["URL"]) == "http://test/ui/projects/p1/milestones/m2"
        assert str(m2["DESCRIPTION"]).startswith("Health: ")

        moved = cloudevent(
            "MilestoneRescheduled",
            {"project_id": "p1", "milestone_id": "m1", "new_due": "2026-12-10", "reason": "x"},
        )
        cancelled = cloudevent(
            "MilestoneCancelled", {"project_id": "p1", "milestone_id": "m2", "reason": "dropped"}
        )
        await caught_up(db_url, await send(nc, [moved, cancelled]), ("status",))
        r = await http.get("/projects/p1/milestones.ics?token=feed-p1&reminder=2")
        after = both_parsers(r.content)
        assert after["m1.p1@milestones"] == (1, dt.date(2026, 12, 10), "CONFIRMED")
        assert after["m2.p1@milestones"][2] == "CANCELLED"
        found = events_of(r.content)
        assert str(found["m2.p1@milestones"]["SUMMARY"]) == "Launch, at last (cancelled)"
        assert len(found["m1.p1@milestones"].walk("VALARM")) == 1
        assert not found["m2.p1@milestones"].walk("VALARM")


async def test_who_may_read_which_feed(planned, authenticator):
    authenticator.add("feed-p1", Principal(id="feed-1", role="feed", projects=frozenset({"p1"})))
    authenticator.add("feed-p2", Principal(id="feed-2", role="feed", projects=frozenset({"p2"})))
    async with plain_client(app_of(planned, authenticator)) as http:

        async def status(path: str, **headers: str) -> tuple[int, str | None]:
            r = await http.get(path, headers=headers)
            code = r.json()["error"]["code"] if r.status_code >= 400 else None
            return r.status_code, code

        assert await status("/projects/p1/milestones.ics?token=feed-p2") == (403, "forbidden")
        assert await status("/projects/p1/milestones.ics") == (401, "unauthenticated")
        reader = TEST_TOKENS["reader"]  # only feed tokens travel in URLs
        assert await status(f"/projects/p1/milestones.ics?token={reader}") == (403, "forbidden")
        assert (await status("/projects/p1/milestones.ics", **auth_headers("reader")))[0] == 200
        assert await status("/projects/p1/milestones.ics", **auth_headers("publisher")) == (
            403,
            "forbidden",
        )
        assert await status("/projects/nope/milestones.ics", **auth_headers("reader")) == (
            404,
            "not_found",
        )
        assert await status("/projects/p1/milestones.ics?reminder=31&token=feed-p1") == (
            400,
            "invalid",
        )
        assert await status("/projects/p1/milestones.ics?remind=2&token=feed-p1") == (
            400,
            "invalid",
        )
        # a feed token reads calendars only
        assert await status("/projects/p1/report?token=feed-p1") == (403, "forbidden")


async def test_the_feed_across_projects_lists_only_the_credentials_projects(planned, authenticator):
    authenticator.add("feed-p1", Principal(id="feed-1", role="feed", projects=frozenset({"p1"})))
    authenticator.add("feed-none", Principal(id="feed-3", role="feed"))
    authenticator.add(
        "reader-p2", Principal(id="reader-p2", role="reader", projects=frozenset({"p2", "p9"}))
    )
    async with plain_client(app_of(planned, authenticator)) as http:

        async def uids(path: str, **headers: str) -> set[str]:
            r = await http.get(path, headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-disposition"] == 'inline; filename="milestones.ics"'
            return set(both_parsers(r.content))

        assert await uids("/calendar.ics?token=feed-p1") == {"m1.p1@milestones", "m2.p1@milestones"}
        everything = await uids("/calendar.ics", **auth_headers("reader"))
        assert everything >= {"m1.p1@milestones", "m2.p1@milestones", "m3.p2@milestones"}
        assert await uids("/calendar.ics?project_id=p2", **auth_headers("reader")) == {
            "m3.p2@milestones"
        }
        # limited to p2 (and p9, which does not exist yet: left out)
        assert await uids("/calendar.ics", Authorization="Bearer reader-p2") == {"m3.p2@milestones"}
        r = await http.get("/calendar.ics?token=feed-p1")
        summaries = {str(e["SUMMARY"]) for e in events_of(r.content).values()}
        assert "Project: Milestone" in summaries  # across projects, each names its project
        refused = [
            "/calendar.ics?token=feed-p1&project_id=p2",  # not its project
            "/calendar.ics?token=feed-none",  # a feed names its projects
        ]
        for path in refused:
            r = await http.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
        r = await http.get("/calendar.ics?project_id=nope", headers=auth_headers("reader"))
        assert r.status_code == 404


async def test_the_cli_prints_a_feed_url_that_dies_with_its_credential(planned, settings):
    """Real credentials: issued and revoked in the log by the CLI, another process; the services
    follow the log, so the revoked feed answers 401 within a second."""
    env = {**cli_env(settings), "MILESTONES_API_URL": "http://test/"}
    code, out, err = await cli(
        "credentials", "create", "--role", "feed", "--project", "p1", env=env
    )
    assert code == 0, err
    said = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    url = said["feed url"].strip()
    token = said["http token"].strip()
    assert url == f"http://test/projects/p1/milestones.ics?token={token}"
    assert planned.auth is not None
    async with plain_client(app_of(planned, planned.auth)) as http:
        await wait_for(
            lambda: _status_is(http, url, 200), timeout=5, what="the new feed token to work"
        )
        assert both_parsers((await http.get(url)).content)  # a calendar, read by both
        code, _, err = await cli("credentials", "revoke", said["id"].strip(), env=env)
        assert code == 0, err
        await wait_for(
            lambda: _status_is(http, url, 401), timeout=1.0, what="the revoked feed refused"
        )


async def _status_is(http: httpx.AsyncClient, url: str, status: int) -> bool:
    return (await http.get(url)).status_code == status


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dev_issues_the_demo_feed_once_and_keeps_it(settings, tmp_path):
    """`milestones dev --demo` writes a feed credential for the demo project to dev.json, and
    the next start keeps it (as it keeps the others)."""
    from services.app.dev import ensure_dev_credentials

    endpoints = {"nats_url": settings.nats_url, "http_url": "http://127.0.0.1:8080"}
    path = await ensure_dev_credentials(settings, tmp_path, endpoints, feed_project="atlas")
    first = json.loads(path.read_text())
    feed = first["feed"]
    assert feed["role"] == "feed" and feed["projects"] == ["atlas"]
    assert first["feed_url"] == (
        f"http://127.0.0.1:8080/projects/atlas/milestones.ics?token={feed['http_token']}"
    )
    moved = {**endpoints, "http_url": "http://127.0.0.1:8090"}
    again = json.loads(
        (await ensure_dev_credentials(settings, tmp_path, moved, "atlas")).read_text()
    )
    assert again["feed"] == feed  # kept across restarts
    assert again["feed_url"].startswith("http://127.0.0.1:8090/projects/atlas/milestones.ics?")
    code, out, _ = await cli("credentials", "feed-url", "--data-dir", str(tmp_path), env={})
    assert code == 0 and out.strip() == again["feed_url"]


async def test_the_dashboard_offers_the_calendar_through_the_session(planned, authenticator):
    """A signed-in reader follows the project page's link: the session is the credential, no
    token in the URL."""
    from tests.test_http_auth import sign_in

    app = app_of(planned, authenticator)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://test"
    ) as http:
        signed_in = await sign_in(http, TEST_TOKENS["reader"], "/ui/login?next=/ui/projects/p1")
        assert signed_in.status_code == 303
        page = await http.get("/ui/projects/p1")
        assert page.status_code == 200
        link = re.search(r'<a href="([^"]+)" type="text/calendar">Calendar \(iCal\)</a>', page.text)
        assert link and link.group(1) == "/projects/p1/milestones.ics"
        assert "milestones credentials create --role feed --project p1" in page.text
        r = await http.get(link.group(1))
        assert r.status_code == 200 and set(both_parsers(r.content)) == {
            "m1.p1@milestones",
            "m2.p1@milestones",
        }
        # and the plan download beside it (README "MS Project plans"), with the same session
        plan = re.search(
            r'<a href="([^"]+)" download="p1.xml">Plan \(MS Project XML\)</a>', page.text
        )
        assert plan and plan.group(1) == "/projects/p1/plan.xml"
        r = await http.get(plan.group(1))
        assert r.status_code == 200 and b"<Project" in r.content, r.text[:300]
