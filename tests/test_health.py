"""The health rule set with a pinned clock (pure: status rows in, judgements out)."""

from __future__ import annotations

import datetime as dt

import msgspec

from projections.status import StatusRow
from services.domain.health import judge

TODAY = dt.date(2026, 6, 10)


def row(
    mid: str,
    due: dt.date,
    *,
    planned_on: dt.date = dt.date(2026, 6, 1),
    done: int = 0,
    total: int = 0,
    preds: dict[str, int] | None = None,
    **kw: object,
) -> StatusRow:
    tasks = {f"t{i}": i < done for i in range(total)}
    base = StatusRow(
        project_id="p",
        milestone_id=mid,
        name=mid,
        kind="event",
        phase=None,
        ord=0,
        success_criteria=None,
        planned_on=planned_on,
        work_start=None,
        due=due,
        first_due=due,
        achieved_at=None,
        cancelled=False,
        missed=False,
        tasks=tasks,
        task_dues={},
        tasks_total=total,
        tasks_done=done,
        progress=100 * done // total if total else 0,
        predecessors=preds or {},
        violations={},
        last_report=None,
        reschedules=0,
        last_position=1,
        updated_at=dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
    )
    return msgspec.structs.replace(base, **kw)


def health(*rows: StatusRow, today: dt.date = TODAY) -> dict[str, tuple[str, list[str]]]:
    return {m: (j.health, j.reasons) for m, j in judge(rows, today).items()}


def test_achieved_and_cancelled_win():
    at = dt.datetime(2026, 6, 12, 15, tzinfo=dt.UTC)
    h = health(
        row("a", dt.date(2026, 6, 5), achieved_at=at), row("c", dt.date(2026, 6, 5), cancelled=True)
    )
    assert h["a"] == ("achieved", ["achieved 2026-06-12, 7 days after its due date"])
    assert h["c"][0] == "cancelled"


def test_missed_when_the_due_date_passed_or_the_deadline_event_said_so():
    h = health(
        row("old", dt.date(2026, 6, 8), done=1, total=2),
        row("flag", dt.date(2026, 6, 10), missed=True),
    )
    assert h["old"] == (
        "missed",
        ["due 2026-06-08 passed 2 days ago without achievement, 1 of 2 tasks open"],
    )
    assert h["flag"][0] == "missed"
    assert health(row("today", TODAY))["today"][0] == "on_track"  # due today is not yet missed


def test_late_when_a_predecessor_pushes_the_expected_finish_past_the_due_date():
    h = judge(
        [row("a", dt.date(2026, 6, 20)), row("b", dt.date(2026, 6, 21), preds={"a": 3})], TODAY
    )
    assert h["b"].health == "late" and h["b"].expected_finish == dt.date(2026, 6, 23)
    assert h["b"].reasons == [
        "expected to finish 2026-06-23, 2 days after its due date 2026-06-21",
        "predecessor a (on_track) finishes 2026-06-20 + 3 days lag: 2026-06-23 at the earliest",
    ]
    assert [(b.milestone_id, b.health) for b in h["b"].blocked_by] == [("a", "on_track")]


def test_lateness_travels_down_a_chain_and_an_achieved_predecessor_counts_with_its_date():
    rows = [
        row("a", dt.date(2026, 6, 20), task_dues={"t0": dt.date(2026, 6, 25)}, total=1),
        row("b", dt.date(2026, 6, 26), preds={"a": 0}),
        row("c", dt.date(2026, 6, 26), preds={"b": 0}),
    ]
    h = judge(rows, TODAY)
    assert (h["a"].health, h["a"].reasons[1]) == ("late", "open task t0 is due 2026-06-25")
    # b still fits, behind a late predecessor; c's predecessor is only at risk: lateness travels
    # by dates
    assert (h["b"].health, h["c"].health) == ("at_risk", "on_track")
    assert h["b"].reasons == ["predecessor a is late (expected 2026-06-25)"]
    done = judge(
        [
            row("a", dt.date(2026, 6, 5), achieved_at=dt.datetime(2026, 6, 9, tzinfo=dt.UTC)),
            row("b", dt.date(2026, 6, 10), preds={"a": 2}),
        ],
        TODAY,
    )
    assert done["b"].health == "late" and done["b"].expected_finish == dt.date(2026, 6, 11)
    assert done["b"].blocked_by == []  # an achieved predecessor blocks nothing


def test_at_risk_when_progress_is_behind_elapsed_time_by_the_threshold():
    # planned Jun 1, due Jun 21: on Jun 10 45% of the time has passed
    assert health(row("x", dt.date(2026, 6, 21), done=1, total=5))["x"] == (
        "at_risk",
        [
            "45% of the time to 2026-06-21 has passed but 20% of tasks are done "
            "(4 open; at risk from 25 points behind)"
        ],
    )
    assert (
        health(row("y", dt.date(2026, 6, 21), done=2, total=5))["y"][0] == "on_track"
    )  # 45 - 40 < 25
    assert (
        health(row("z", dt.date(2026, 6, 21)))["z"][0] == "on_track"
    )  # no tasks: no progress to judge
    assert (
        judge([row("x", dt.date(2026, 6, 21), done=2, total=5)], TODAY, gap=5)["x"].health
        == "at_risk"
    )


def test_the_clock_is_an_input():
    r = row("m", dt.date(2026, 6, 21), done=2, total=4)
    assert [
        judge([r], d)["m"].health
        for d in (dt.date(2026, 6, 2), dt.date(2026, 6, 18), dt.date(2026, 6, 22))
    ] == ["on_track", "at_risk", "missed"]


def test_elapsed_time_starts_at_the_earliest_task_start_when_there_is_one():
    later = row("w", dt.date(2026, 6, 21), done=0, total=2, work_start=dt.date(2026, 6, 11))
    assert health(later)["w"][0] == "on_track"  # work has not started yet: nothing is behind
    assert (
        health(later, today=dt.date(2026, 6, 16))["w"][0] == "at_risk"
    )  # half the window gone, 0% done


def test_a_chain_longer_than_the_recursion_limit_is_judged():
    chain = [row("m0", dt.date(2026, 6, 20))]
    chain += [row(f"m{n}", dt.date(2026, 6, 20), preds={f"m{n - 1}": 0}) for n in range(1, 3000)]
    chain[0] = row("m0", dt.date(2026, 6, 20), task_dues={"t0": dt.date(2026, 6, 25)}, total=1)
    verdicts = judge(chain, TODAY)
    assert verdicts["m2999"].health == "late" and verdicts["m2999"].expected_finish == dt.date(
        2026, 6, 25
    )


def _paced_project(target: dt.date | None = None) -> dict:
    """Hand-worked (today 2026-06-10, a Wednesday). The pace window is the six weeks up to
    today: 04-30..05-06, 05-07..05-13, ..., 06-04..06-10; two tasks were completed in each (eight
    of design's, four of build's), so every weekly pace is 2/7 a day: the median, the 20th and
    the 80th percentile alike.

    build: due 06-20, 6 of 10 tasks open, first in the queue: ceil(6 / (2/7)) = 21 days, so its
    forecast is 07-01, 11 days after its due date. launch (no task: no forecast) depends on
    build with a 5-day lag, due 07-10, and is the last milestone.

    Without a target the finish is 07-10: late(launch) = 07-10, late(build) = 07-10 - 5 = 07-05;
    early(build) = its forecast 07-01, so build's float is 4 days (the slip fits in it). With a
    target of 07-01: late(build) = 06-26, float 06-26 - 07-01 = -5: through build, launch can
    finish 07-01 + 5 = 07-06 at the earliest (its own due date 07-10 already puts it later:
    launch's own float is 07-01 - 07-10 = -9). Both are critical."""
    d = dt.date
    design_days = [d(2026, 5, 1), d(2026, 5, 2), d(2026, 5, 8), d(2026, 5, 9)]
    design_days += [d(2026, 5, 15), d(2026, 5, 16), d(2026, 5, 22), d(2026, 5, 23)]
    build_days = [d(2026, 5, 29), d(2026, 5, 30), d(2026, 6, 5), d(2026, 6, 6)]
    design = row(
        "design",
        d(2026, 5, 25),
        planned_on=d(2026, 4, 20),
        done=8,
        total=8,
        achieved_at=dt.datetime(2026, 5, 24, tzinfo=dt.UTC),
        tasks_done_on={f"t{i}": day for i, day in enumerate(design_days)},
    )
    build = row(
        "build",
        d(2026, 6, 20),
        done=4,
        total=10,
        preds={"design": 0},
        tasks_done_on={f"t{i}": day for i, day in enumerate(build_days)},
    )
    launch = row("launch", d(2026, 7, 10), preds={"build": 5})
    return judge([design, build, launch], TODAY, target=target)


def test_a_forecast_after_the_due_date_puts_a_milestone_at_risk_within_its_float():
    j = _paced_project()
    build = j["build"]
    assert (build.forecast, build.forecast_low, build.forecast_high) == (dt.date(2026, 7, 1),) * 3
    assert build.health == "at_risk"
    assert build.reasons == [
        "forecast 2026-07-01 from the pace of work (6 open task(s) ahead at 2.0 tasks/week) "
        "is 11 days after its due date 2026-06-20"
    ]
    # 4 days of slack left: launch (float 0) drives the finish, build does not
    assert (build.float_days, build.critical, build.drives) == (4, False, "launch")
    launch = j["launch"]
    assert (launch.forecast, launch.float_days, launch.critical, launch.health) == (
        None,
        0,
        True,
        "on_track",
    )
    assert j["design"].forecast is None and j["design"].critical is False


def test_a_slip_beyond_the_float_names_the_final_milestone_it_moves():
    j = _paced_project(target=dt.date(2026, 7, 1))
    build = j["build"]
    assert build.float_days == -5 and j["launch"].float_days == -9
    assert build.health == "at_risk" and build.reasons[-1] == (
        "the slip exceeds its float: through it, final milestone launch can finish 2026-07-06 "
        "at the earliest, 5 days after the project's finish 2026-07-01"
    )
    assert build.critical and j["launch"].critical


def test_without_a_pace_there_is_no_forecast_and_no_forecast_rule():
    j = judge([row("solo", dt.date(2026, 6, 20), done=1, total=4, tasks_done_on={})], TODAY)
    assert j["solo"].forecast is None and j["solo"].health == "on_track"
    assert j["solo"].forecast_basis == "no pace: 0 tasks completed in the last 6 weeks"
