"""The critical path and total float, worked by hand (pure: nodes in, slack out)."""

from __future__ import annotations

import datetime as dt

from bench.critical_path import build
from services.domain.critical_path import CriticalPath, Node, critical_path, ordered


def june(day: int) -> dt.date:
    return dt.date(2026, 6, 1) + dt.timedelta(days=day - 1)


def node(
    mid: str, earliest: int, due: int, preds: dict[str, int] | None = None, done: bool = False
) -> Node:
    return Node(
        milestone_id=mid,
        due=june(due),
        earliest=june(earliest),
        predecessors=preds or {},
        done=done,
    )


def table(result: CriticalPath) -> dict[str, tuple[int, int, int, bool]]:
    """Early and late finish as days of June 2026, float, critical."""
    base = june(0)
    return {
        s.milestone_id: (
            (s.early_finish - base).days,
            (s.late_finish - base).days,
            s.float_days,
            s.critical,
        )
        for s in result.milestones
    }


# Two chains into the final milestone F (days of June 2026; "+5" is the lag, "-2" a lead):
#
#   A ──+5──► B ──────────+4──┐
#                             ▼
#   C ──+3──► D ──-2──► E ─+2─► F (due 20, final)
#
#   id  earliest  due  early (forward pass)            late (backward pass)         float
#   A   1         5    1                                16 - 5 = 11                   10
#   B   3         10   max(3, A 1 + 5 = 6) = 6          F 20 - 4 = 16                 10
#   C   2         4    2                                D 20 - 3 = 17                 15
#   D   11        12   max(11, C 2 + 3 = 5) = 11        E 18 + 2 = 20 (the lead)       9
#   E   7         16   max(7, D 11 - 2 = 9) = 9         F 20 - 2 = 18                  9
#   F   10        20   max(10, B 6+4=10, E 9+2=11) = 11 finish: F's due, 20            9
#
# No target: the finish is the latest due of the final milestones, F's 20. The least float is 9,
# so D, E, F (float 9) are critical though every float is positive: that chain drives F.
def plan(done: tuple[str, ...] = (), **achieved: int) -> list[Node]:
    nodes = [
        node("F", 10, 20, {"B": 4, "E": 2}),
        node("E", 7, 16, {"D": -2}),
        node("D", 11, 12, {"C": 3}),
        node("C", 2, 4),
        node("B", 3, 10, {"A": 5}),
        node("A", 1, 5),
    ]
    return [
        node(n.milestone_id, achieved[n.milestone_id], 0, n.predecessors, True)
        if n.milestone_id in done
        else n
        for n in nodes
    ]


def test_two_chains_with_a_lead_worked_by_hand() -> None:
    result = critical_path(plan())
    assert table(result) == {
        "A": (1, 11, 10, False),
        "B": (6, 16, 10, False),
        "C": (2, 17, 15, False),
        "D": (11, 20, 9, True),
        "E": (9, 18, 9, True),
        "F": (11, 20, 9, True),
    }
    assert [s.milestone_id for s in result.milestones] == ["A", "B", "C", "D", "E", "F"]
    assert result.chain == ["D", "E", "F"]
    assert result.finish == june(20) and result.target is None
    assert result.project_float_days == 9
    assert {s.drives for s in result.milestones} == {"F"}


def test_a_target_earlier_than_achievable_gives_negative_floats_all_critical() -> None:
    # target June 8: late F 8, E 8-2 = 6, D 6+2 = 8, C 8-3 = 5, B 8-4 = 4, A 4-5 = -1 (May 30)
    # floats: F 8-11 = -3, E 6-9 = -3, D 8-11 = -3, C 5-2 = 3, B 4-6 = -2, A -1-1 = -2
    result = critical_path(plan(), target=june(8))
    assert table(result) == {
        "A": (1, -1, -2, True),
        "B": (6, 4, -2, True),
        "C": (2, 5, 3, False),
        "D": (11, 8, -3, True),
        "E": (9, 6, -3, True),
        "F": (11, 8, -3, True),
    }
    assert result.finish == result.target == june(8)
    assert result.project_float_days == -3
    assert result.chain == ["A", "B", "D", "E", "F"]  # every float <= 0 is behind: critical


def test_every_float_positive_the_least_slack_chain_is_critical() -> None:
    # target June 25: every late finish 5 days later than with F's due, every float +5
    result = critical_path(plan(), target=june(25))
    assert {mid: row[2] for mid, row in table(result).items()} == {
        "A": 15,
        "B": 15,
        "C": 20,
        "D": 14,
        "E": 14,
        "F": 14,
    }
    assert result.project_float_days == 14
    assert result.chain == ["D", "E", "F"]


def test_done_milestones_keep_their_date_and_are_never_critical() -> None:
    # A achieved June 4, D achieved June 3 (before C 2 + 3 = 5: the fact is not moved):
    #   early: A 4, B max(3, 4+5) = 9, C 2, D 3, E max(7, 3-2) = 7, F max(10, 9+4, 7+2) = 13
    #   late (finish 20): F 20, E 18, D 20, C 17, B 16, A 11
    #   float: A 7 (done), B 7, C 15, D 17 (done), E 11, F 7; least over the open ones: 7
    result = critical_path(plan(done=("A", "D"), A=4, D=3))
    assert table(result) == {
        "A": (4, 11, 7, False),
        "B": (9, 16, 7, True),
        "C": (2, 17, 15, False),
        "D": (3, 20, 17, False),
        "E": (7, 18, 11, False),
        "F": (13, 20, 7, True),
    }
    assert result.project_float_days == 7
    assert result.chain == ["B", "F"]


def test_all_done_has_no_project_float_and_no_chain() -> None:
    result = critical_path([node("A", 3, 5, done=True)])
    assert result.project_float_days is None and result.chain == []
    assert table(result) == {"A": (3, 5, 2, False)}


def test_predecessors_outside_the_nodes_are_ignored() -> None:
    result = critical_path([node("A", 2, 6, {"cancelled": 30, "elsewhere": -3})])
    assert table(result) == {"A": (2, 6, 4, True)}
    assert result.chain == ["A"] and result.milestones[0].drives == "A"


def test_empty_input() -> None:
    assert critical_path([]) == CriticalPath(
        finish=None, target=None, milestones=[], chain=[], project_float_days=None
    )


def test_drives_names_the_final_milestone_that_binds() -> None:
    # Two final milestones, P1 (due 20) and P2 (due 30): the finish is 30, both late finishes 30.
    #   S (earliest 5) ─+10─► P1;  S ─+2─► P2;  Q (3) ─+1─► P2;  T (1) ─0─► P1 and P2
    #   early: S 5, Q 3, T 1, P1 max(1, 5+10, 1) = 15, P2 max(1, 5+2, 3+1, 1) = 7
    #   late: S min(P1 30-10 = 20, P2 30-2 = 28) = 20 via P1; Q 30-1 = 29 via P2;
    #         T min(30, 30): a tie, the smaller id P1
    result = critical_path(
        [
            node("P1", 1, 20, {"S": 10, "T": 0}),
            node("P2", 1, 30, {"S": 2, "Q": 1, "T": 0}),
            node("Q", 3, 9),
            node("S", 5, 9),
            node("T", 1, 9),
        ]
    )
    assert result.finish == june(30)
    assert {s.milestone_id: s.drives for s in result.milestones} == {
        "P1": "P1",
        "P2": "P2",
        "Q": "P2",
        "S": "P1",
        "T": "P1",
    }
    assert {mid: row[1:3] for mid, row in table(result).items()} == {
        "P1": (30, 15),
        "P2": (30, 23),
        "Q": (29, 26),
        "S": (20, 15),
        "T": (30, 29),
    }
    assert result.chain == ["S", "P1"]


def test_a_cycle_in_bad_data_is_cut_at_its_smallest_id() -> None:
    # a waits on x; x and y wait on each other. Nothing is ready: the walk back from the
    # smallest id left, a, goes a -> x -> y -> x, so the cycle is {x, y} and the dependency
    # into x (its smallest id) from y is ignored. Order x, then a and y (ready together, by id).
    graph = {"a": {"x": 0}, "x": {"y": 1}, "y": {"x": 1}}
    assert ordered(graph) == (["x", "a", "y"], {"a": {"x": 0}, "x": {}, "y": {"x": 1}})
    result = critical_path(
        [node("a", 1, 10, {"x": 0}), node("x", 1, 10, {"y": 1}), node("y", 1, 10, {"x": 1})]
    )
    # early x 1, y 2, a 1; finals a and y (nothing depends on them now): finish 10;
    # late a 10, y 10, x min(a 10 - 0, y 10 - 1) = 9
    assert table(result) == {
        "x": (1, 9, 8, True),
        "y": (2, 10, 8, True),
        "a": (1, 10, 9, False),
    }
    assert ordered({"s": {"s": 3}}) == (["s"], {"s": {}})  # its own predecessor


def test_a_ring_of_ten_thousand_terminates() -> None:
    n = 10_000
    nodes = [node(f"m{i:05d}", 1, 5, {f"m{(i - 1) % n:05d}": 1}) for i in range(n)]
    result = critical_path(nodes)
    # the dependency into m00000 (from m09999) is cut: a chain m00000 .. m09999, one day apart
    assert [s.milestone_id for s in result.milestones] == sorted(n.milestone_id for n in nodes)
    assert result.milestones[-1].early_finish == june(n)
    assert result.project_float_days == 5 - n and len(result.chain) == n


def test_dates_saturate_instead_of_raising() -> None:
    late = Node(milestone_id="L", due=dt.date.max, earliest=dt.date.max, predecessors={})
    after = Node(milestone_id="M", due=june(1), earliest=june(1), predecessors={"L": 10})
    result = critical_path([late, after], target=dt.date.min)
    by_id = {s.milestone_id: s for s in result.milestones}
    assert by_id["M"].early_finish == dt.date.max  # date.max + 10 saturates
    assert by_id["L"].late_finish == dt.date.min  # date.min - 10 saturates
    assert by_id["M"].float_days == dt.date.min.toordinal() - dt.date.max.toordinal()


def test_ten_thousand_milestones_twenty_thousand_dependencies() -> None:
    nodes = build()
    assert sum(len(n.predecessors) for n in nodes) == 20_000
    result = critical_path(nodes)
    by_id = {n.milestone_id: n for n in nodes}
    slack = {s.milestone_id: s for s in result.milestones}
    position = {s.milestone_id: k for k, s in enumerate(result.milestones)}
    successors: set[str] = set()
    for n in nodes:
        s = slack[n.milestone_id]
        assert s.float_days == (s.late_finish - s.early_finish).days
        assert s.early_finish >= n.earliest or n.done
        for p, lag in n.predecessors.items():
            successors.add(p)
            assert position[p] < position[n.milestone_id]
            assert n.done or s.early_finish >= slack[p].early_finish + dt.timedelta(days=lag)
            assert slack[p].late_finish <= s.late_finish - dt.timedelta(days=lag)
    finals = set(by_id) - successors
    assert {s.drives for s in result.milestones} <= finals
    assert result.finish == max(by_id[f].due for f in finals)
    floats = [s.float_days for s in result.milestones if not by_id[s.milestone_id].done]
    assert result.project_float_days == min(floats)
    bar = max(0, min(floats))
    assert result.chain == [
        s.milestone_id
        for s in result.milestones
        if s.float_days <= bar and not by_id[s.milestone_id].done
    ]
    assert result.chain
