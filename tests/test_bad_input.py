"""Every bad input gets a stable code and a message that says what to fix; nothing is written;
the service stays up. Checked through NATS request/reply (real server) and HTTP."""

from __future__ import annotations

import json

import pytest

from services.eventlog.log import EventLog
from tests.conftest import cloudevent, plan_project, request

GOOD_DATA = {"project_id": "p", "milestone_id": "m", "task_id": "t1"}


def with_data(**changes) -> dict:
    return cloudevent("TaskCompleted", {**GOOD_DATA, **changes})


CASES = [
    ("malformed json", b'{"specversion": "1.0", ', "invalid", "malformed JSON"),
    ("not an object", b'"hello"', "invalid", "expected a CloudEvent JSON object"),
    (
        "missing time",
        json.dumps(
            {k: v for k, v in cloudevent("TaskCompleted", GOOD_DATA).items() if k != "time"}
        ).encode(),
        "invalid",
        "missing required field `time`",
    ),
    (
        "wrong specversion",
        json.dumps({**cloudevent("TaskCompleted", GOOD_DATA), "specversion": "0.3"}).encode(),
        "invalid",
        "`$.specversion`",
    ),
    (
        "time without offset",
        json.dumps(cloudevent("TaskCompleted", GOOD_DATA, time="2026-11-24T10:00:00")).encode(),
        "invalid",
        "`$.time`",
    ),
    (
        "unknown type",
        json.dumps(cloudevent("TaskExploded", GOOD_DATA)).encode(),
        "unknown_type",
        "use one of: ApproversSet, BaselineSet",
    ),
    (
        "missing field",
        json.dumps(cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m"})).encode(),
        "invalid",
        "missing required field `task_id`",
    ),
    (
        "mistyped field",
        json.dumps(
            cloudevent(
                "MilestonePlanned",
                {
                    "project_id": "p",
                    "milestone_id": "m",
                    "name": "n",
                    "kind": "event",
                    "due": "2026-12-01",
                    "order": "first",
                },
            )
        ).encode(),
        "invalid",
        "Expected `int`, got `str` - at `$.order`",
    ),
    ("bad id", json.dumps(with_data(task_id="has space")).encode(), "invalid", "at `$.task_id`"),
    (
        "id too long",
        json.dumps(with_data(task_id="x" * 65)).encode(),
        "invalid",
        "[A-Za-z0-9_-]{1,64}",
    ),
    (
        "bad enum",
        json.dumps(
            cloudevent(
                "MilestonePlanned",
                {
                    "project_id": "p",
                    "milestone_id": "m",
                    "name": "n",
                    "kind": "someday",
                    "due": "2026-12-01",
                },
            )
        ).encode(),
        "invalid",
        "`$.kind`",
    ),
    (
        "not a date",
        json.dumps(
            cloudevent(
                "MilestoneRescheduled",
                {"project_id": "p", "milestone_id": "m", "new_due": "next week", "reason": "x"},
            )
        ).encode(),
        "invalid",
        "Invalid RFC3339 encoded date - at `$.new_due`",
    ),
    (
        "empty reason",
        json.dumps(
            cloudevent(
                "MilestoneRescheduled",
                {"project_id": "p", "milestone_id": "m", "new_due": "2027-01-01", "reason": ""},
            )
        ).encode(),
        "invalid",
        "`$.reason`",
    ),
    (
        "data not an object",
        json.dumps(cloudevent("TaskCompleted", [1, 2])).encode(),
        "invalid",
        "TaskCompleted data",
    ),
    (
        "too large",
        json.dumps(with_data(completed_at=None) | {"padding": "x" * 70_000}).encode(),
        "too_large",
        "the limit is 65536 bytes",
    ),
    ("empty batch", b"[]", "invalid", "the batch is empty"),
    (
        "batch too long",
        json.dumps([with_data() for _ in range(101)]).encode(),
        "too_large",
        "the limit is 100",
    ),
    (
        "duplicate in batch",
        json.dumps([with_data() | {"id": "same"}, with_data() | {"id": "same"}]).encode(),
        "invalid",
        "appears twice in this batch",
    ),
    (
        "business rule",
        json.dumps(with_data(task_id="t9")).encode(),
        "not_found",
        "task t9 is not part of milestone m",
    ),
]


@pytest.mark.parametrize(("name", "body", "code", "text"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_over_nats(intake, nc, name, body, code, text):
    for ce in plan_project("p", "m", tasks=("t1",)):
        await request(nc, ce)
    before = await EventLog(nc).last_sequence()
    subject = (
        "milestones.commands.batch"
        if body.startswith(b"[")
        else "milestones.commands.TaskCompleted"
    )
    if name in ("unknown type",):
        subject = "milestones.commands.TaskExploded"
    if name in ("mistyped field", "bad enum"):
        subject = "milestones.commands.MilestonePlanned"
    if name in ("not a date", "empty reason"):
        subject = "milestones.commands.MilestoneRescheduled"
    reply = await request(nc, body, subject)
    assert not reply.accepted
    assert reply.error.code == code, reply.error.message
    assert text in reply.error.message
    assert await EventLog(nc).last_sequence() == before
    # still up: a good message goes through
    assert (await request(nc, with_data())).accepted


async def test_subject_must_match_the_type(intake, nc):
    reply = await request(nc, json.dumps(with_data()).encode(), "milestones.commands.TaskAdded")
    assert (
        reply.error.code == "invalid"
        and "publish to the subject of its type" in reply.error.message
    )


async def test_http_accepts_and_refuses_with_the_contract_json(http):
    for ce in plan_project("p", "m", tasks=("t1",)):
        r = await http.post(
            "/events", json=ce, headers={"content-type": "application/cloudevents+json"}
        )
        assert r.status_code == 202 and r.json()["accepted"] is True
    first = await http.post("/events", json=with_data() | {"id": "h-1"})
    assert first.status_code == 202
    assert [e["type"] for e in first.json()["events"]] == ["TaskCompleted", "MilestoneAchieved"]
    again = await http.post("/events", json=with_data() | {"id": "h-1"})
    assert again.status_code == 202 and again.json() == first.json()

    cases = [
        (b"{nope", "application/json", 400, "invalid"),
        (json.dumps(with_data(task_id="t9")).encode(), "application/json", 404, "not_found"),
        (
            json.dumps(cloudevent("ProjectCreated", {"project_id": "p", "name": "again"})).encode(),
            "application/json",
            409,
            "conflict",
        ),
        (json.dumps(cloudevent("Nope", {})).encode(), "application/json", 400, "unknown_type"),
        (b"x" * 70_000, "application/json", 413, "too_large"),
        (b"x" * 300_000, "application/json", 413, "too_large"),
        (b"{}", "text/plain", 415, "invalid"),
    ]
    for body, ctype, status, code in cases:
        r = await http.post("/events", content=body, headers={"content-type": ctype})
        assert r.status_code == status, (r.status_code, r.text)
        assert r.json()["accepted"] is False and r.json()["error"]["code"] == code
        assert r.json()["error"]["message"]


async def test_http_batch(http):
    batch = plan_project("q", "m", tasks=("a", "b"))
    r = await http.post(
        "/events", json=batch, headers={"content-type": "application/cloudevents-batch+json"}
    )
    assert r.status_code == 202
    assert [e["type"] for e in r.json()["events"]] == [
        "ProjectCreated",
        "MilestonePlanned",
        "TaskAdded",
        "TaskAdded",
    ]


async def test_openapi_is_served(http):
    r = await http.get("/schema/openapi.json")
    assert r.status_code == 200 and "/events" in r.json()["paths"]
