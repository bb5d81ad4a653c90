"""Value bounds at the intake (events.bounds): every out-of-range value is ``invalid`` with a
message naming the field and the allowed range, over NATS and HTTP, and nothing is written;
values at the edges are accepted; invalid UTF-8 and deep JSON are ``invalid`` (HTTP 400), never
500 or ``unavailable``; stored events decode whatever they hold; the exported JSON Schemas say
the same bounds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from events import INBOUND_TYPES, decode_stored, event_of
from events.bounds import (
    CLOCK_SKEW,
    INT_MAX,
    INT_MIN,
    LINE_PATTERN,
    MAX_JSON_DEPTH,
    MULTILINE_PATTERN,
    json_too_deep,
)
from events.errors import Rejected
from services.app.schema_export import cloudevent_schema, data_schema, write_all
from services.auth.principal import SERVICE
from services.eventlog.log import EventLog
from services.intake.parse import Limits, parse
from tests.conftest import cloudevent, request

P, M = {"project_id": "p"}, {"project_id": "p", "milestone_id": "m"}
PLANNED = {**M, "name": "Design", "kind": "event", "due": "2026-12-01"}
TIME = "2026-11-24T10:00:00Z"
LATE = "2026-11-24T10:05:01Z"  # one second past the allowed skew


def ce(type_: str, data: dict, **envelope: object) -> dict:
    return cloudevent(type_, data, **envelope)


DATE_RANGE = "1970-01-01 to 2199-12-31"
TIME_RANGE = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
CONTROL = "control characters"
INT_RANGE = f"{INT_MIN} to {INT_MAX}"

# (name, CloudEvent, the field the message names, the range it states)
REFUSED = [
    ("due 9999", ce("MilestonePlanned", {**PLANNED, "due": "9999-12-31"}), "$.due", DATE_RANGE),
    ("due year 1", ce("MilestonePlanned", {**PLANNED, "due": "0001-01-01"}), "$.due", DATE_RANGE),
    ("due 1969", ce("MilestonePlanned", {**PLANNED, "due": "1969-12-31"}), "$.due", DATE_RANGE),
    (
        "new_due 2200",
        ce("MilestoneRescheduled", {**M, "new_due": "2200-01-01", "reason": "r"}),
        "$.new_due",
        DATE_RANGE,
    ),
    (
        "task start 1900",
        ce("TaskAdded", {**M, "task_id": "t", "title": "x", "start": "1900-01-01"}),
        "$.start",
        DATE_RANGE,
    ),
    (
        "baseline date",
        ce("BaselineSet", {**P, "name": "b", "planned": {"m": "9999-12-31"}}),
        "$.planned.m",
        DATE_RANGE,
    ),
    ("NUL in a name", ce("ProjectCreated", {**P, "name": "a\x00b"}), "$.name", CONTROL),
    (
        "escape in a title",
        ce("TaskAdded", {**M, "task_id": "t", "title": "\x1b[31mred"}),
        "$.title",
        CONTROL,
    ),
    (
        "newline in a name",
        ce("MilestonePlanned", {**PLANNED, "name": "two\nlines"}),
        "$.name",
        CONTROL,
    ),
    (
        "DEL in a stakeholder",
        ce(
            "StakeholderSubscribed",
            {**P, "stakeholder": "ops\x7f", "url": "http://127.0.0.1:9/hook"},
        ),
        "$.stakeholder",
        CONTROL,
    ),
    (
        "NUL in a url",
        ce("StakeholderSubscribed", {**P, "stakeholder": "ops", "url": "http://127.0.0.1/\x00"}),
        "$.url",
        CONTROL,
    ),
    ("NUL in a reason", ce("MilestoneCancelled", {**M, "reason": "no\x00"}), "$.reason", CONTROL),
    (
        "C1 control in a note",
        ce("StatusReported", {**P, "health": "on_track", "note": "fine\x85"}),
        "$.note",
        CONTROL,
    ),
    (
        "NUL in a goal",
        ce("ProjectCreated", {**P, "name": "x", "goals": ["ok", "b\x00"]}),
        "$.goals[1]",
        CONTROL,
    ),
    (
        "order 2^31",
        ce("MilestonePlanned", {**PLANNED, "order": 2**31}),
        "$.order",
        INT_RANGE,
    ),
    (
        "order 2^40",
        ce("MilestonePlanned", {**PLANNED, "order": 2**40}),
        "$.order",
        INT_RANGE,
    ),
    (
        "order below -2^31",
        ce("MilestonePlanned", {**PLANNED, "order": -(2**31) - 1}),
        "$.order",
        INT_RANGE,
    ),
    (
        "lag below a year's lead",
        ce("DependencyAdded", {**M, "depends_on": "n", "lag_days": -366}),
        "$.lag_days",
        ">= -365",
    ),
    (
        "lag over ten years",
        ce("DependencyAdded", {**M, "depends_on": "n", "lag_days": 3651}),
        "$.lag_days",
        "<= 3650",
    ),
    (
        "completed after the message",
        ce("TaskCompleted", {**M, "task_id": "t", "completed_at": LATE}, time=TIME),
        "$.completed_at",
        "allowed skew: 5 minutes",
    ),
    (
        "completed years after the message",
        ce("TaskCompleted", {**M, "task_id": "t", "completed_at": "2031-01-01T00:00:00Z"}),
        "$.completed_at",
        "allowed skew: 5 minutes",
    ),
    (
        "achieved after the message",
        ce("MilestoneAchieved", {**M, "achieved_at": LATE}, time=TIME),
        "$.achieved_at",
        "allowed skew: 5 minutes",
    ),
    (
        "completed in 1969",
        ce("TaskCompleted", {**M, "task_id": "t", "completed_at": "1969-12-31T23:59:59Z"}),
        "$.completed_at",
        TIME_RANGE,
    ),
    (
        "time year 1 at +14:00",
        ce("TaskCompleted", {**M, "task_id": "t"}, time="0001-01-01T00:00:00+14:00"),
        "$.time",
        TIME_RANGE,
    ),
    (
        "time 9999 at -14:00",
        ce("TaskCompleted", {**M, "task_id": "t"}, time="9999-12-31T23:59:59-14:00"),
        "$.time",
        TIME_RANGE,
    ),
    (
        "time just after 2199",
        ce("TaskCompleted", {**M, "task_id": "t"}, time="2200-01-01T00:00:01Z"),
        "$.time",
        TIME_RANGE,
    ),
    (
        "time in 1969 once in UTC",
        ce("TaskCompleted", {**M, "task_id": "t"}, time="1970-01-01T00:30:00+01:00"),
        "$.time",
        TIME_RANGE,
    ),
    (
        "NUL in the source",
        ce("ProjectCreated", {**P, "name": "x"}, source="tests\x00"),
        "$.source",
        CONTROL,
    ),  # noqa: E501
    (
        "NUL in the actor",
        ce("ProjectCreated", {**P, "name": "x"}, actor="bot\x00"),
        "$.actor",
        CONTROL,
    ),  # noqa: E501
    ("newline in the id", ce("ProjectCreated", {**P, "name": "x"}, id="a\nb"), "$.id", CONTROL),
    (
        "NUL in the correlation id",
        ce("ProjectCreated", {**P, "name": "x"}, correlationid="c\x00"),
        "$.correlationid",
        CONTROL,
    ),
    (
        "NUL in the subject",
        ce("ProjectCreated", {**P, "name": "x"}, subject="s\x00"),
        "$.subject",
        CONTROL,
    ),
]

UNDECODABLE = [
    ("invalid UTF-8", b'{"specversion": "1.0", "id": "a\xff", "source": "s"}', "not UTF-8"),
    (
        "invalid UTF-8 in data",
        json.dumps(ce("ProjectCreated", {**P, "name": "NAME"})).encode().replace(b"NAME", b"\xc3"),
        "not UTF-8",
    ),
    (
        "invalid UTF-8 in an unknown field",
        json.dumps(ce("ProjectCreated", {**P, "name": "x"}, extra="E"))
        .encode()
        .replace(b"E", b"\xfe"),  # noqa: E501
        "not UTF-8",
    ),
    (
        "nesting beyond msgspec's own limit",
        b'{"specversion": "1.0", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "nested more than",
    ),
    (
        "nesting past the documented limit",
        json.dumps(
            ce("ProjectCreated", {**P, "name": "x", "deep": json.loads("[" * 40 + "]" * 40)})
        ).encode(),
        "nested more than 32 levels",
    ),
]


def refusal(body: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        parse(body, Limits(), SERVICE)
    return caught.value


@pytest.mark.parametrize(("name", "event", "field", "rule"), REFUSED, ids=[c[0] for c in REFUSED])
def test_the_intake_refuses_each_value_out_of_bounds(name, event, field, rule):
    rej = refusal(json.dumps(event).encode())
    assert rej.code == "invalid"
    assert f"`{field}`" in rej.message and rule in rej.message, rej.message


@pytest.mark.parametrize(("name", "body", "text"), UNDECODABLE, ids=[c[0] for c in UNDECODABLE])
def test_undecodable_bodies_are_invalid(name, body, text):
    rej = refusal(body)
    assert rej.code == "invalid" and text in rej.message, rej.message


ACCEPTED_EDGES = [
    ce("ProjectCreated", {**P, "name": "Edges", "goals": ["line one\nline two\ttabbed\r\n"]}),
    ce("MilestonePlanned", {**PLANNED, "milestone_id": "first", "due": "1970-01-01"}),
    ce("MilestonePlanned", {**PLANNED, "due": "2199-12-31", "order": INT_MAX}),
    ce("MilestonePlanned", {**PLANNED, "milestone_id": "n", "order": INT_MIN}),
    ce("TaskAdded", {**M, "task_id": "t", "title": "Ünïcødé ✓ 任务"}),
    ce("DependencyAdded", {**M, "depends_on": "n", "lag_days": -365}),
    ce("DependencyAdded", {**M, "depends_on": "first", "lag_days": 3650}),
    ce(
        "TaskCompleted",
        {**M, "task_id": "t", "completed_at": "2026-11-24T10:05:00Z"},  # exactly the skew
        time=TIME,
    ),
    ce(
        "MilestoneRescheduled",
        {**M, "milestone_id": "first", "new_due": "1970-01-02", "reason": "why:\n\tbecause"},
        time="2200-01-01T00:00:00Z",  # the end of 2199-12-31: a deadline fires then
    ),
]


def test_values_at_the_edges_pass_the_bounds():
    assert CLOCK_SKEW.total_seconds() == 300
    for event in ACCEPTED_EDGES:
        parse(json.dumps(event).encode(), Limits(), SERVICE)


async def test_over_nats_out_of_bounds_is_invalid_and_nothing_is_written(intake, nc):
    for event in ACCEPTED_EDGES:
        reply = await request(nc, event)
        assert reply.accepted, (event["type"], reply.error)
    log = EventLog(nc)
    before = await log.last_sequence()
    for name, event, field, _rule in REFUSED:
        reply = await request(nc, event)
        assert not reply.accepted and reply.error.code == "invalid", (name, reply.error)
        assert f"`{field}`" in reply.error.message, (name, reply.error.message)
    for name, body, text in UNDECODABLE:
        reply = await request(nc, body, "milestones.commands.ProjectCreated")
        assert reply.error.code == "invalid" and text in reply.error.message, (name, reply.error)
    assert await log.last_sequence() == before
    # still up
    assert (await request(nc, ce("ProjectCreated", {"project_id": "q", "name": "Q"}))).accepted


async def test_over_http_out_of_bounds_is_400_never_500(http, intake, nc):
    before = await EventLog(nc).last_sequence()
    bodies = [(name, json.dumps(e).encode(), f"`{f}`") for name, e, f, _ in REFUSED]
    bodies += UNDECODABLE
    for name, body, text in bodies:
        r = await http.post("/events", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (name, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid" and text in error["message"], (name, error)
    assert await EventLog(nc).last_sequence() == before
    ok = await http.post("/events", json=ce("ProjectCreated", {**P, "name": "After"}))
    assert ok.status_code == 202


def stored(type_: str, data: dict, *, time: str = TIME, **envelope: object) -> bytes:
    return json.dumps(
        {
            "id": "legacy",
            "source": "before-the-bounds",
            "type": type_,
            "subject": "milestones.events.p.m",
            "time": time,
            "recordedtime": TIME,
            "correlationid": "c",
            "causationid": "c",
            "data": {"type": type_, **data},
            **envelope,
        }
    ).encode()


def test_stored_events_decode_whatever_the_log_already_holds():
    """Written before the bounds: the stored decoder takes them as they are."""
    planned = event_of(
        decode_stored(
            stored(
                "MilestonePlanned",
                {**PLANNED, "name": "a\x00b", "due": "9999-12-31", "order": 2**40},
            )  # noqa: E501
        )
    )
    assert (planned.name, planned.due.year, planned.order) == ("a\x00b", 9999, 2**40)
    early = event_of(
        decode_stored(
            stored("MilestoneRescheduled", {**M, "new_due": "0001-01-01", "reason": "\x00"})
        )
    )  # noqa: E501
    assert early.new_due.year == 1
    odd = decode_stored(
        stored(
            "TaskCompleted",
            {**M, "task_id": "t", "completed_at": "9999-12-31T23:59:59-14:00"},
            time="0001-01-01T00:00:00+14:00",
            actor="bot\x00",
            source="src\x07",
        )
    )
    assert odd.time.year == 1 and odd.actor == "bot\x00"
    assert event_of(odd).completed_at.year == 9999
    stakeholder = event_of(
        decode_stored(
            stored("StakeholderSubscribed", {**P, "stakeholder": "s\x7f", "url": "http://h/\x00"})
        )
    )
    assert stakeholder.url.endswith("\x00")


def test_json_depth_is_exact_and_ignores_brackets_in_strings():
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    text = json.dumps({"a": "[[[[{{{{" * 20, "b": '\\"]]' * 30, "c": [[["x"]]]}).encode()
    assert not json_too_deep(text) and not json_too_deep(text, 4)
    assert json_too_deep(text, 3)


# -- the exported schemas say the same bounds ------------------------------------------------------
def walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def test_the_exported_schemas_state_the_bounds(tmp_path: Path):
    written = {p.name: json.loads(p.read_text()) for p in write_all(tmp_path)}
    schemas = {n: s for n, s in written.items() if n not in ("asyncapi.json", "Reply.json")}
    assert len(schemas) == len(INBOUND_TYPES) + 1  # one per type in, and the CloudEvent
    for name, schema in schemas.items():
        for path, node in walk(schema):
            if node.get("type") == "integer":
                assert node["minimum"] >= INT_MIN and node["maximum"] <= INT_MAX, (name, path)
            if node.get("type") == "string" and node.get("format") in ("date", "date-time"):
                assert "pattern" in node and "2199-12-31" in node["description"], (name, path)
            elif node.get("type") == "string":
                pattern = re.compile(node["pattern"])  # every text field has one
                assert not pattern.search("a\x00b"), (name, path)

    planned = data_schema("MilestonePlanned")["$defs"]["MilestonePlanned"]["properties"]
    assert (planned["order"]["minimum"], planned["order"]["maximum"]) == (INT_MIN, INT_MAX)
    assert planned["name"]["pattern"] == LINE_PATTERN
    assert planned["success_criteria"]["anyOf"][0]["pattern"] == MULTILINE_PATTERN
    due = re.compile(planned["due"]["pattern"])
    assert due.match("1970-01-01") and due.match("2199-12-31")
    assert not due.match("9999-12-31") and not due.match("0001-01-01")
    assert not due.match("1969-12-31") and not due.match("2200-01-01")
    lag = data_schema("DependencyAdded")["$defs"]["DependencyAdded"]["properties"]["lag_days"]
    assert (lag["minimum"], lag["maximum"]) == (-365, 3650)
    url = data_schema("StakeholderSubscribed")["$defs"]["StakeholderSubscribed"]["properties"]
    assert not re.match(url["url"]["pattern"], "http://h/\x00") and re.match(
        url["url"]["pattern"], "https://hooks.example/x?y=1"
    )
    envelope = cloudevent_schema()["$defs"]["CloudEventIn"]["properties"]
    assert "after conversion to UTC" in envelope["time"]["description"]
    assert not re.match(envelope["time"]["pattern"], "0001-01-01T00:00:00+14:00")
    for attribute in ("id", "source"):
        assert envelope[attribute]["pattern"] == LINE_PATTERN
    reason = re.compile(
        data_schema("MilestoneCancelled")["$defs"]["MilestoneCancelled"]["properties"]["reason"][
            "pattern"
        ]
    )
    assert reason.match("line\nline\ttab") and not reason.match("nul\x00")


def test_the_schema_patterns_and_the_intake_agree():
    """What a schema's pattern refuses, the intake refuses: one sample per control character."""
    line, multiline = re.compile(LINE_PATTERN), re.compile(MULTILINE_PATTERN)
    for code in [*range(0x20), *range(0x7F, 0xA0)]:
        char = chr(code)
        event = ce("MilestoneCancelled", {**M, "reason": f"x{char}y"})
        intake_ok = True
        try:
            parse(msgspec.json.encode(event), Limits(), SERVICE)
        except Rejected:
            intake_ok = False
        assert intake_ok == bool(multiline.match(f"x{char}y")), hex(code)
        assert not line.match(f"x{char}y")
