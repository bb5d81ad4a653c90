"""The forecast: when each open milestone will finish at the pace the project works, with a
range, and the backtest that says how good such forecasts were.

Pure; ``today`` is an input. The definitions (also in the README):

- *pace*: the project's task completions per day. The window is the ``7 * weeks`` days up to
  and including ``today`` (``weeks`` = 6 unless told), split into its weeks (the last one ends
  on ``today``); a week's pace is its completions / 7. The forecast's pace is the median of
  the weekly paces (the mean of the middle two for an even number of weeks); the range uses
  their 20th and 80th percentiles, nearest-rank (the value at rank ``ceil(p / 100 * weeks)`` of
  the weekly paces sorted ascending): the 80th percentile pace gives the early date (``low``),
  the 20th the late one (``high``; no upper bound when that pace is 0). A median of 0 means no
  forecast from pace: ``basis`` says "no pace: N tasks completed in the last W weeks".
- *queue*: the team works the open (not achieved, not cancelled) milestones in the order
  (due, order, milestone id). The *work ahead* of an open milestone is its open tasks plus the
  open tasks of every open milestone before it in the queue.
- *forecast*: ``today + ceil(work ahead / pace)`` days, but never earlier than what its
  predecessors allow: each predecessor's forecast (its achieved date once achieved, its
  expected finish when it has no forecast) plus the lag. ``low`` and ``high`` are the same
  with the 80th and 20th percentile paces and the predecessors' ``low`` and ``high`` (a
  predecessor without an upper bound leaves none). ``basis``: "pace", or "predecessor X" when
  predecessor X (the smallest id among equals) holds the forecast later.
- A milestone with no open tasks: ``max(today, its predecessors' constraint)`` for all three
  dates, ``basis`` "no open tasks" — the work is done, only sign-off or its date remain. A
  milestone that never had a task (``has_tasks`` false) has no forecast ("no tasks: nothing to
  pace"); its successors use its expected finish.

Predecessors not in ``work`` or cancelled are ignored; cycles in bad data are cut the way the
critical path cuts them (``services.domain.critical_path.ordered``).

The backtest: the caller folds the event log as it stood at each of a milestone's
``checkpoints`` (25 %, 50 % and 75 % of the time from planning to due), forecasts there,
compares with the achieved date, and ``summarise`` gives the mean absolute error and the bias.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

import msgspec

from services.domain.critical_path import ordered
from services.domain.dates import add_days

DEFAULT_WEEKS = 6


class Work(msgspec.Struct, frozen=True, kw_only=True):
    milestone_id: str
    due: dt.date
    order: int = 0
    open_tasks: int
    predecessors: dict[str, int] = msgspec.field(default_factory=dict)  # id -> lag in days
    achieved_on: dt.date | None = None
    cancelled: bool = False
    expected_finish: dt.date
    has_tasks: bool = True  # False: it never had a task, so there is no work to pace


class Forecast(msgspec.Struct, frozen=True, kw_only=True):
    milestone_id: str
    forecast: dt.date | None
    low: dt.date | None  # the early end of the range (80th percentile pace)
    high: dt.date | None  # the late end (20th percentile pace); None: no upper bound
    pace_per_week: float | None  # the median pace x 7, 2 decimals; None without a pace
    work_ahead: int
    basis: str


class Pace(NamedTuple):
    weekly: list[int]  # completions in each week of the window, oldest first
    median: Fraction  # tasks per day
    p20: Fraction
    p80: Fraction


def _nearest_rank(ordered_values: list[Fraction], percent: int) -> Fraction:
    rank = max(1, math.ceil(percent * len(ordered_values) / 100))
    return ordered_values[rank - 1]


def pace(completions: Sequence[dt.date], today: dt.date, weeks: int = DEFAULT_WEEKS) -> Pace:
    """The weekly completions over the window and the median, 20th and 80th percentile paces
    (tasks per day, exact)."""
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, not {weeks}")
    start = today.toordinal() - (7 * weeks - 1)
    weekly = [0] * weeks
    for day in completions:
        offset = day.toordinal() - start
        if 0 <= offset < 7 * weeks:
            weekly[offset // 7] += 1
    paces = sorted(Fraction(n, 7) for n in weekly)
    middle = len(paces) // 2
    median = paces[middle] if len(paces) % 2 else (paces[middle - 1] + paces[middle]) / 2
    return Pace(weekly, median, _nearest_rank(paces, 20), _nearest_rank(paces, 80))


Dates = tuple[dt.date | None, dt.date | None, dt.date | None]  # forecast, low, high


def forecast(
    work: Sequence[Work],
    completions: Sequence[dt.date],
    today: dt.date,
    weeks: int = DEFAULT_WEEKS,
) -> dict[str, Forecast]:
    """A forecast for every open milestone of one project, in queue order (see the module
    docstring); achieved and cancelled milestones are absent."""
    by_id = {w.milestone_id: w for w in work if not w.cancelled}
    queue = sorted(
        (w for w in by_id.values() if w.achieved_on is None),
        key=lambda w: (w.due, w.order, w.milestone_id),
    )
    ahead: dict[str, int] = {}
    running = 0
    for w in queue:
        running += max(0, w.open_tasks)
        ahead[w.milestone_id] = running

    speed = pace(completions, today, weeks)
    per_week = round(float(speed.median * 7), 2) if speed.median else None
    no_pace = f"no pace: {sum(speed.weekly)} tasks completed in the last {weeks} weeks"

    def after(tasks: int, rate: Fraction) -> dt.date | None:
        # ceil(tasks / rate) in integers: Fraction division was most of a judge's time (profiled)
        if not rate:
            return None
        return add_days(today, -(-tasks * rate.denominator // rate.numerator))

    order, kept = ordered({mid: w.predecessors for mid, w in by_id.items()})
    dates: dict[str, Dates] = {}
    out: dict[str, Forecast] = {}
    for mid in order:
        w = by_id[mid]
        if w.achieved_on is not None:
            dates[mid] = (w.achieved_on, w.achieved_on, w.achieved_on)
            continue
        if not w.has_tasks:
            own: Dates = (None, None, None)
            basis = "no tasks: nothing to pace"
        elif w.open_tasks <= 0:
            own = (today, today, today)
            basis = "no open tasks"
        elif speed.median:
            n = ahead[mid]
            own = (after(n, speed.median), after(n, speed.p80), after(n, speed.p20))
            basis = "pace"
        else:
            own = (None, None, None)
            basis = no_pace
        result, binding = _held_back(own, kept[mid], dates, by_id)
        if binding is not None and basis == "pace":
            basis = f"predecessor {binding}"
        dates[mid] = (result[0], result[1], result[2])
        out[mid] = Forecast(
            milestone_id=mid,
            forecast=result[0],
            low=result[1],
            high=result[2],
            pace_per_week=per_week,
            work_ahead=ahead[mid],
            basis=basis,
        )
    return {w.milestone_id: out[w.milestone_id] for w in queue}


def _held_back(
    own: Dates, preds: Mapping[str, int], dates: Mapping[str, Dates], by_id: Mapping[str, Work]
) -> tuple[list[dt.date | None], str | None]:
    """``own`` (forecast, low, high) no earlier than each predecessor's plus the lag, and the
    predecessor that holds the forecast itself back (None: its own work does)."""
    result = list(own)
    binding = None
    for p, lag in sorted(preds.items()):
        bounds = dates[p]
        if bounds[0] is None:  # no forecast: its expected finish stands in for it
            bounds = (by_id[p].expected_finish,) * 3
        for k in range(3):
            mine, theirs = result[k], bounds[k]
            if mine is None:
                continue
            if theirs is None:  # a predecessor without an upper bound leaves none
                result[k] = None
                continue
            allowed = add_days(theirs, lag)
            if allowed > mine:
                result[k] = allowed
                binding = p if k == 0 else binding
    return result, binding


class BacktestPoint(msgspec.Struct, frozen=True, kw_only=True):
    milestone_id: str
    at_fraction: float  # 0.25, 0.5 or 0.75 of the time from planning to due
    on: dt.date  # the day the forecast was made (the log folded as it stood then)
    forecast: dt.date | None
    actual: dt.date  # the achieved date
    error_days: int | None  # forecast - actual; positive: the forecast was late (pessimistic)


class Backtest(msgspec.Struct, frozen=True, kw_only=True):
    points: list[BacktestPoint]
    samples: int  # points with a forecast
    skipped: int  # points without one
    mean_absolute_error_days: float | None
    bias_days: float | None  # the mean signed error; positive: forecasts ran late


def checkpoint_fractions(planned_on: dt.date, due: dt.date) -> list[tuple[float, dt.date]]:
    """Each checkpoint with its fraction: ``planned_on`` plus the fraction of the days to
    ``due``, rounded half down; a day already taken by an earlier fraction is not repeated;
    none when ``due`` is not after ``planned_on``."""
    days = (due - planned_on).days
    out: list[tuple[float, dt.date]] = []
    for quarters, fraction in ((1, 0.25), (2, 0.5), (3, 0.75)):
        whole, rest = divmod(quarters * days, 4)
        day = add_days(planned_on, whole + (1 if rest > 2 else 0))  # rest 2 is a half: down
        if days > 0 and all(day != taken for _, taken in out):
            out.append((fraction, day))
    return out


def checkpoints(planned_on: dt.date, due: dt.date) -> list[dt.date]:
    """The days at 25 %, 50 % and 75 % of the time from planning to due (see
    ``checkpoint_fractions``)."""
    return [day for _, day in checkpoint_fractions(planned_on, due)]


def point(
    milestone_id: str, at_fraction: float, on: dt.date, forecast: dt.date | None, actual: dt.date
) -> BacktestPoint:
    """A backtest point with its error worked out."""
    return BacktestPoint(
        milestone_id=milestone_id,
        at_fraction=at_fraction,
        on=on,
        forecast=forecast,
        actual=actual,
        error_days=None if forecast is None else (forecast - actual).days,
    )


def summarise(errors: Sequence[BacktestPoint]) -> Backtest:
    """Mean absolute error and bias (mean signed error) in days, 2 decimals, over the points
    with a forecast; each point's ``error_days`` is recomputed from its dates."""
    points = [point(p.milestone_id, p.at_fraction, p.on, p.forecast, p.actual) for p in errors]
    signed = [p.error_days for p in points if p.error_days is not None]
    return Backtest(
        points=points,
        samples=len(signed),
        skipped=len(points) - len(signed),
        mean_absolute_error_days=round(sum(map(abs, signed)) / len(signed), 2) if signed else None,
        bias_days=round(sum(signed) / len(signed), 2) if signed else None,
    )
