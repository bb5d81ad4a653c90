"""The query service's memo of judged projects (``services.query.judged_memo``): pure logic,
status rows in as the JSON texts the database sends; the API's side is in test_query_api."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from projections.status import StatusRow
from services.domain import health
from services.domain.health import judge as judge_afresh  # bound before any spy
from services.query import judged_memo
from services.query.judged_memo import JudgedMemo
from tests.test_health import TODAY, row


def texts(*rows: StatusRow) -> list[str]:
    return [msgspec.json.encode(r).decode() for r in rows]


PROJECT = texts(
    row("design", dt.date(2026, 7, 1), total=4, done=1),
    row("build", dt.date(2026, 8, 1), total=2, preds={"design": 3}),
)


@pytest.fixture
def judgements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each call of ``health.judge`` judged, in order."""
    calls: list[int] = []
    real = health.judge

    def counted(rows, today, gap=health.DEFAULT_GAP, target=None):  # type: ignore[no-untyped-def]
        rows = list(rows)
        calls.append(len(rows))
        return real(rows, today, gap, target)

    monkeypatch.setattr(judged_memo.health, "judge", counted)
    return calls


def test_the_same_texts_target_day_and_gap_are_not_judged_again(judgements: list[int]) -> None:
    memo = JudgedMemo()
    first = memo.judged("p", PROJECT, None, TODAY, 25)
    again = memo.judged("p", list(PROJECT), None, TODAY, 25)  # equal texts, another list
    assert judgements == [2]
    assert again is first
    assert [r.milestone_id for r in first.rows] == ["design", "build"]
    assert first.verdicts == judge_afresh(first.rows, TODAY)


@pytest.mark.parametrize(
    "change",
    ["a row's text", "a new row", "a row gone", "the target", "the day", "the gap"],
)
def test_any_difference_is_judged_again_as_from_scratch(judgements: list[int], change: str) -> None:
    memo = JudgedMemo()
    memo.judged("p", PROJECT, None, TODAY, 25)
    rows, target, today, gap = list(PROJECT), None, TODAY, 25
    if change == "a row's text":  # a task done
        rows[0] = texts(row("design", dt.date(2026, 7, 1), total=4, done=2))[0]
    elif change == "a new row":
        rows += texts(row("ship", dt.date(2026, 9, 1), preds={"build": 0}))
    elif change == "a row gone":
        rows = rows[:1]
    elif change == "the target":  # two weeks before build's due date: negative floats
        target = dt.date(2026, 7, 18)
    elif change == "the day":
        today = TODAY + dt.timedelta(days=1)
    else:  # design: 25 % done with 23 % of its time gone; build: 0 % with 10 %
        gap = 5
    got = memo.judged("p", rows, target, today, gap)
    assert len(judgements) == 2
    assert got.verdicts == judge_afresh(got.rows, today, gap, target)
    assert [msgspec.json.encode(r).decode() for r in got.rows] == rows
    # and the memo now holds the new judgement
    assert memo.judged("p", rows, target, today, gap) is got and len(judgements) == 2


SIZE = sum(len(t) for t in PROJECT)


def test_it_keeps_the_projects_read_last_within_its_budget(judgements: list[int]) -> None:
    memo = JudgedMemo(budget=2 * SIZE)
    a = memo.judged("a", PROJECT, None, TODAY, 25)
    memo.judged("b", PROJECT, None, TODAY, 25)
    assert memo.judged("a", PROJECT, None, TODAY, 25) is a  # read again: now the latest
    memo.judged("c", PROJECT, None, TODAY, 25)  # one too many: "b", read least recently, goes
    assert (len(memo), memo.kept_chars, len(judgements)) == (2, 2 * SIZE, 3)
    assert memo.judged("a", PROJECT, None, TODAY, 25) is a
    memo.judged("b", PROJECT, None, TODAY, 25)
    assert len(judgements) == 4


def test_a_project_judged_again_replaces_what_was_kept(judgements: list[int]) -> None:
    memo = JudgedMemo(budget=2 * SIZE)
    memo.judged("a", PROJECT, None, TODAY, 25)
    memo.judged("a", PROJECT[:1], None, TODAY, 25)  # a milestone removed: less to keep
    assert (len(memo), memo.kept_chars) == (1, len(PROJECT[0]))


def test_a_project_larger_than_the_budget_is_judged_and_not_kept(judgements: list[int]) -> None:
    memo = JudgedMemo(budget=SIZE)
    kept = memo.judged("small", PROJECT, None, TODAY, 25)
    big = PROJECT + texts(row("ship", dt.date(2026, 9, 1)))
    assert [r.milestone_id for r in memo.judged("big", big, None, TODAY, 25).rows][-1] == "ship"
    memo.judged("big", big, None, TODAY, 25)
    assert len(judgements) == 3  # judged each time it was read
    assert memo.judged("small", PROJECT, None, TODAY, 25) is kept  # and pushed nothing out
    assert (len(memo), memo.kept_chars) == (1, SIZE)


def test_a_project_without_rows_is_not_kept(judgements: list[int]) -> None:
    memo = JudgedMemo(budget=SIZE)
    kept = memo.judged("p", PROJECT, None, TODAY, 25)
    for n in range(5):  # reads of ids that do not exist push nothing out
        assert memo.judged(f"nothing{n}", [], None, TODAY, 25).rows == []
    assert memo.judged("p", PROJECT, None, TODAY, 25) is kept and judgements == [2]


def test_answers_share_nothing_they_could_change_with_the_memo() -> None:
    late = texts(
        row("design", dt.date(2026, 6, 5), total=4, done=1),  # missed: a blocker of build
        row("build", dt.date(2026, 8, 1), total=2, preds={"design": 3}),
    )
    judged = JudgedMemo().judged("p", late, None, TODAY, 25)
    once, twice = judged.presented(), judged.presented()
    assert [d for _, d in once] == [d for _, d in twice]
    assert once[1][1]["blocked_by"] and once[1][1]["predecessors"]
    for (_, a), (_, b) in zip(once, twice, strict=True):
        assert a is not b
        for name, value in a.items():
            if isinstance(value, list | dict):
                assert value is not b[name], name
                items = value if isinstance(value, list) else list(value.values())
                others = b[name] if isinstance(value, list) else list(b[name].values())
                assert all(
                    x is not y
                    for x, y in zip(items, others, strict=True)
                    if isinstance(x, msgspec.Struct)
                ), name
    assert once[1][1]["health"] == judged.verdicts["build"].health


def test_a_memo_has_a_budget_and_one_of_0_keeps_nothing(judgements: list[int]) -> None:
    with pytest.raises(ValueError, match="0 or more characters"):
        JudgedMemo(budget=-1)
    memo = JudgedMemo(budget=0)
    first = memo.judged("p", PROJECT, None, TODAY, 25)
    again = memo.judged("p", PROJECT, None, TODAY, 25)
    assert len(memo) == 0 and memo.kept_chars == 0 and judgements == [2, 2]
    assert again is not first and again.verdicts == first.verdicts


def test_the_setting_is_the_memos_budget() -> None:
    from services.app.settings import Settings
    from services.query.judged_memo import MEMO_TEXT_BUDGET
    from services.query.queries import Queries

    assert Settings.from_env({}).query_memo_chars == MEMO_TEXT_BUDGET
    chars = Settings.from_env({"MILESTONES_QUERY_MEMO_CHARS": "1000"}).query_memo_chars
    assert chars == 1000
    assert Queries(None, None, None, memo_chars=chars).memo.budget == 1000  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MILESTONES_QUERY_MEMO_CHARS must be 0 or more, got '-1'"):
        Settings.from_env({"MILESTONES_QUERY_MEMO_CHARS": "-1"})
