"""A milestone's history in time order, paged by a (time, position) cursor that neither skips
nor repeats a row when back-dated changes arrive between two pages (real nats-server and
PostgreSQL, through HTTP and NATS)."""

from __future__ import annotations

import datetime as dt
import json

from events import ENCODER
from services.query.params import encode_cursor
from tests.conftest import cloudevent, plan_project, request

P, M = "orbit", "design"


def moved(new_due: str, time: str) -> dict:
    data = {"project_id": P, "milestone_id": M, "new_due": new_due, "reason": f"to {new_due}"}
    return cloudevent("MilestoneRescheduled", data, time=time)


async def send(nc, *ces: dict) -> int:
    """Send in order; the position of the last event appended."""
    position = 0
    for ce in ces:
        reply = await request(nc, ce)
        assert reply.accepted, reply
        position = reply.events[-1].position
    return position


async def page(api, position: int, **params: object) -> dict:
    got = await api.get(
        f"/milestones/{M}/history", params={"min_position": position, "limit": 1, **params}
    )
    assert got.status_code == 200, got.text
    return got.json()


def moments(rows: list[dict]) -> list[tuple[str, str | None]]:
    return [(r["occurred_at"][:10], r["new_due"]) for r in rows]


async def test_history_is_in_time_order_and_its_cursor_survives_back_dated_events(api, nc):
    planned = plan_project(P, M, tasks=(), due="2026-12-01")
    for ce in planned:
        ce["time"] = "2026-10-01T09:00:00Z"
    # sent out of time order: the November change first, the October one after it
    position = await send(
        nc,
        *planned,
        moved("2026-12-20", "2026-11-10T09:00:00Z"),
        moved("2026-12-10", "2026-10-20T09:00:00Z"),
    )
    everything = await page(api, position, limit=100)
    assert moments(everything["data"]) == [
        ("2026-10-01", "2026-12-01"),
        ("2026-10-20", "2026-12-10"),
        ("2026-11-10", "2026-12-20"),
    ]
    assert everything["data"][1]["position"] > everything["data"][2]["position"]
    first_read = everything["position"]  # what the read model had when the pages began

    one = await page(api, position)
    assert moments(one["data"]) == [("2026-10-01", "2026-12-01")] and one["next_cursor"]
    # back-dated after the cursor (2026-10-05 comes after the row shown): on a later page, once
    position = await send(nc, moved("2026-12-05", "2026-10-05T09:00:00Z"))
    two = await page(api, position, cursor=one["next_cursor"])
    assert moments(two["data"]) == [("2026-10-05", "2026-12-05")]
    three = await page(api, position, cursor=two["next_cursor"])
    assert moments(three["data"]) == [("2026-10-20", "2026-12-10")]
    # back-dated before the cursor (2026-10-12 < 2026-10-20): later pages do not show it, and
    # nothing shown is shown again or skipped
    position = await send(nc, moved("2026-12-12", "2026-10-12T09:00:00Z"))
    four = await page(api, position, cursor=three["next_cursor"])
    assert moments(four["data"]) == [("2026-11-10", "2026-12-20")]
    assert four.get("next_cursor") is None
    # what was appended since the pages began, wherever it lands in time
    since = await page(api, position, limit=100, cursor_position=first_read)
    assert moments(since["data"]) == [("2026-10-05", "2026-12-05"), ("2026-10-12", "2026-12-12")]
    # a cursor and cursor_position together: after the cursor, and appended since
    after_one = await page(
        api, position, limit=100, cursor=one["next_cursor"], cursor_position=first_read
    )
    assert moments(after_one["data"]) == moments(since["data"])
    # NATS answers what HTTP answers (a page after the cursor of page two: the 2026-10-12 row)
    params = {"milestone_id": M, "min_position": position, "limit": 1, "cursor": two["next_cursor"]}
    asked = await nc.request("milestones.query.history", ENCODER.encode(params), timeout=10)
    over_http = await page(api, position, cursor=two["next_cursor"])
    assert json.loads(asked.data) == over_http
    assert moments(over_http["data"]) == [("2026-10-12", "2026-12-12")]


async def test_a_cursor_the_history_did_not_hand_out_is_refused(api, nc):
    position = await send(nc, *plan_project(P, M, tasks=()))
    for cursor in (encode_cursor([position]), encode_cursor(["yesterday", 3]), "!!"):
        got = await api.get(
            f"/milestones/{M}/history", params={"min_position": position, "cursor": cursor}
        )
        assert (got.status_code, got.json()["error"]["code"]) == (400, "invalid"), cursor
        assert "next_cursor" in got.json()["error"]["message"]


def test_rows_the_dashboard_builds_are_put_in_the_same_order():
    from projections.history import in_time_order

    at = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
    rows = [
        {"position": 3, "occurred_at": at + dt.timedelta(days=20)},
        {"position": 9, "occurred_at": at},
        {"position": 5, "occurred_at": at},
    ]
    assert [r["position"] for r in in_time_order(rows)] == [5, 9, 3]
