"""Forecasts from the pace of work and their backtest, worked by hand (pure, ``today`` pinned)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import pytest

from services.domain.forecast import (
    Backtest,
    Forecast,
    Work,
    checkpoint_fractions,
    checkpoints,
    forecast,
    pace,
    point,
    summarise,
)

TODAY = dt.date(2026, 3, 15)


def d(month: int, day: int) -> dt.date:
    return dt.date(2026, month, day)


def done_on(*weeks: tuple[dt.date, int]) -> list[dt.date]:
    return [day for day, n in weeks for _ in range(n)]


# The window: the 6 weeks = 42 days up to and including Sunday 15 March 2026, from 2 February.
#   week      2-8 Feb  9-15 Feb  16-22 Feb  23 Feb-1 Mar  2-8 Mar  9-15 Mar
#   done      7        14        0          7             21       14
#   pace/day  1        2         0          1             3        2
# Sorted paces 0 1 1 2 2 3: median (1 + 2) / 2 = 1.5 a day (10.5 a week);
# 20th percentile: rank ceil(0.2 * 6) = 2 -> 1; 80th: rank ceil(0.8 * 6) = 5 -> 2.
# 1 February and 16 March are outside the window.
COMPLETIONS = done_on(
    (d(2, 1), 5),
    (d(2, 2), 3),
    (d(2, 8), 4),
    (d(2, 12), 14),
    (d(2, 23), 2),
    (d(3, 1), 5),
    (d(3, 4), 21),
    (d(3, 15), 14),
    (d(3, 16), 9),
)


def work(mid: str, due: dt.date, open_tasks: int, **kw: Any) -> Work:
    kw.setdefault("expected_finish", due)
    return Work(milestone_id=mid, due=due, open_tasks=open_tasks, **kw)


def test_weekly_paces_median_and_percentiles() -> None:
    speed = pace(COMPLETIONS, TODAY)
    assert speed.weekly == [7, 14, 0, 7, 21, 14]
    assert speed.median == Fraction(3, 2)
    assert (speed.p20, speed.p80) == (1, 2)
    assert pace(COMPLETIONS, TODAY, weeks=1).weekly == [14]  # 9-15 March alone
    with pytest.raises(ValueError):
        pace(COMPLETIONS, TODAY, weeks=0)


# The queue, ordered by (due, order, id): M3 (due 20 Mar), M1 (1 Apr, order 0), M2 (1 Apr,
# order 1); M0 (achieved) and MX (cancelled) are not in it.
#   id  open  work ahead     forecast (1.5/day)       low (2/day)          high (1/day)
#   M3  3     3              ceil(2)   = 2: 17 Mar    ceil(1.5) = 2: 17    3: 18 Mar
#   M1  6     3 + 6 = 9      ceil(6)   = 6: 21 Mar    ceil(4.5) = 5: 20    9: 24 Mar
#   M2  9     9 + 9 = 18     ceil(12) = 12: 27 Mar    9: 24 Mar            18: 2 Apr
def queue(**preds: dict[str, int]) -> list[Work]:
    return [
        work("M2", d(4, 1), 9, order=1, predecessors=preds.get("M2", {})),
        work("M1", d(4, 1), 6, order=0, predecessors=preds.get("M1", {})),
        work("M3", d(3, 20), 3, order=5),
        work("M0", d(3, 1), 0, achieved_on=d(3, 10)),
        work("MX", d(3, 2), 50, cancelled=True),
    ]


def test_queue_order_and_work_ahead() -> None:
    result = forecast(queue(), COMPLETIONS, TODAY)
    assert list(result) == ["M3", "M1", "M2"]
    assert result["M1"] == Forecast(
        milestone_id="M1",
        forecast=d(3, 21),
        low=d(3, 20),
        high=d(3, 24),
        pace_per_week=10.5,
        work_ahead=9,
        basis="pace",
    )
    assert {m: (f.work_ahead, f.forecast, f.low, f.high) for m, f in result.items()} == {
        "M3": (3, d(3, 17), d(3, 17), d(3, 18)),
        "M1": (9, d(3, 21), d(3, 20), d(3, 24)),
        "M2": (18, d(3, 27), d(3, 24), d(4, 2)),
    }


def test_predecessors_with_a_lag_push_the_forecast_later() -> None:
    # M1 after M3 + 5 days: forecast max(21, 17 + 5 = 22) = 22 Mar, low max(20, 17 + 5) = 22,
    # high max(24, 18 + 5 = 23) = 24. M2 after M0 (achieved 10 Mar) + 20 days = 30 Mar:
    # forecast max(27 Mar, 30) = 30 Mar, low max(24 Mar, 30 Mar) = 30 Mar, high stays 2 Apr.
    # A cancelled predecessor is ignored.
    result = forecast(queue(M1={"M3": 5}, M2={"M0": 20, "MX": 90}), COMPLETIONS, TODAY)
    assert (result["M1"].forecast, result["M1"].low, result["M1"].high) == (
        d(3, 22),
        d(3, 22),
        d(3, 24),
    )
    assert result["M1"].basis == "predecessor M3"
    assert (result["M2"].forecast, result["M2"].low, result["M2"].high) == (
        d(3, 30),
        d(3, 30),
        d(4, 2),
    )
    assert result["M2"].basis == "predecessor M0"
    assert result["M3"].basis == "pace"


def test_no_pace_gives_no_forecast_with_the_reason() -> None:
    # weekly 1 0 0 0 1 0: sorted 0 0 0 0 1 1, median (0 + 0) / 2 = 0
    completions = [d(2, 3), d(3, 5)]
    result = forecast(
        [
            work("N1", d(3, 18), 4, expected_finish=d(3, 20)),
            # nothing open: its predecessor has no forecast, so its expected finish stands in:
            # 20 Mar + 3 = 23 Mar
            work("N2", d(3, 25), 0, predecessors={"N1": 3}),
        ],
        completions,
        TODAY,
    )
    assert result["N1"] == Forecast(
        milestone_id="N1",
        forecast=None,
        low=None,
        high=None,
        pace_per_week=None,
        work_ahead=4,
        basis="no pace: 2 tasks completed in the last 6 weeks",
    )
    assert result["N2"].forecast == result["N2"].low == result["N2"].high == d(3, 23)
    assert result["N2"].basis == "no open tasks"


def test_zero_open_tasks_is_today_or_what_predecessors_allow() -> None:
    # Z: nothing open, its predecessor achieved 1 Mar + 2 days = 3 Mar, before today: today.
    # Y: 3 open behind Z's none, work ahead 3: ceil(3 / 1.5) = 2 days, 17 Mar.
    result = forecast(
        [
            work("Y", d(3, 18), 3),
            work("Z", d(3, 16), 0, predecessors={"A": 2}),
            work("A", d(3, 1), 0, achieved_on=d(3, 1)),
        ],
        COMPLETIONS,
        TODAY,
    )
    assert result["Z"] == Forecast(
        milestone_id="Z",
        forecast=TODAY,
        low=TODAY,
        high=TODAY,
        pace_per_week=10.5,
        work_ahead=0,
        basis="no open tasks",
    )
    assert (result["Y"].work_ahead, result["Y"].forecast) == (3, d(3, 17))


def test_a_milestone_that_never_had_a_task_has_no_forecast_and_its_successor_uses_its_date():
    # N has no task at all: nothing to pace, so no forecast; S (2 open, work ahead 2 -> 2 days,
    # 17 Mar) waits for N's expected finish 20 Mar + 1 day lag: 21 Mar.
    result = forecast(
        [
            work("N", d(3, 20), 0, has_tasks=False),
            work("S", d(3, 25), 2, predecessors={"N": 1}),
        ],
        COMPLETIONS,
        TODAY,
    )
    assert (result["N"].forecast, result["N"].basis) == (None, "no tasks: nothing to pace")
    assert (result["S"].forecast, result["S"].basis) == (d(3, 21), "predecessor N")


def test_a_zero_twentieth_percentile_leaves_no_upper_bound() -> None:
    # weekly 0 0 7 7 7 7: sorted 0 0 1 1 1 1, median 1, 20th rank 2 -> 0, 80th rank 5 -> 1
    completions = done_on((d(2, 16), 7), (d(2, 23), 7), (d(3, 2), 7), (d(3, 9), 7))
    result = forecast(
        [work("H", d(3, 20), 4), work("K", d(3, 30), 0, predecessors={"H": 1})],
        completions,
        TODAY,
    )
    assert (result["H"].forecast, result["H"].low, result["H"].high) == (d(3, 19), d(3, 19), None)
    assert (result["K"].forecast, result["K"].low, result["K"].high) == (d(3, 20), d(3, 20), None)


def test_a_dependency_cycle_in_bad_data_terminates() -> None:
    result = forecast(
        [
            work("a", d(3, 20), 3, predecessors={"b": 1}),
            work("b", d(3, 21), 3, predecessors={"a": 1}),
        ],
        COMPLETIONS,
        TODAY,
    )
    # the dependency into a (from b) is cut: a 17 Mar by pace (3 ahead), b max(19, 17 + 1) = 19
    assert (result["a"].forecast, result["b"].forecast) == (d(3, 17), d(3, 19))


def test_checkpoints_at_a_quarter_half_and_three_quarters() -> None:
    # 1 Jan -> 21 Jan 2026 is 20 days: 5, 10 and 15 days in
    assert checkpoints(d(1, 1), d(1, 21)) == [d(1, 6), d(1, 11), d(1, 16)]
    assert checkpoint_fractions(d(1, 1), d(1, 21)) == [
        (0.25, d(1, 6)),
        (0.5, d(1, 11)),
        (0.75, d(1, 16)),
    ]
    # 2 days: 0.5 -> 0 (half down), 1, 1.5 -> 1 (half down, a repeat: dropped)
    assert checkpoint_fractions(d(1, 1), d(1, 3)) == [(0.25, d(1, 1)), (0.5, d(1, 2))]
    # 3 days: 0.75 -> 1, 1.5 -> 1 (a repeat), 2.25 -> 2
    assert checkpoint_fractions(d(1, 1), d(1, 4)) == [(0.25, d(1, 2)), (0.75, d(1, 3))]
    assert checkpoints(d(1, 1), d(1, 1)) == [] and checkpoints(d(1, 2), d(1, 1)) == []


def test_summarise_mean_absolute_error_and_bias() -> None:
    # errors +3 (late), -7 (early), +1; one point without a forecast is skipped
    # MAE (3 + 7 + 1) / 3 = 3.67; bias (3 - 7 + 1) / 3 = -1
    actual = d(3, 17)
    points = [
        point("M1", 0.25, d(2, 1), d(3, 20), actual),
        point("M1", 0.5, d(2, 15), d(3, 10), actual),
        point("M1", 0.75, d(3, 1), d(3, 18), actual),
        point("M2", 0.25, d(2, 1), None, actual),
    ]
    assert [p.error_days for p in points] == [3, -7, 1, None]
    result = summarise(points)
    assert result == Backtest(
        points=points,
        samples=3,
        skipped=1,
        mean_absolute_error_days=3.67,
        bias_days=-1.0,
    )
    assert summarise([points[3]]).mean_absolute_error_days is None
    assert summarise([]) == Backtest(
        points=[], samples=0, skipped=0, mean_absolute_error_days=None, bias_days=None
    )
