"""The rows a status rebuild holds between batches: pure bookkeeping, no server."""

from __future__ import annotations

import pytest

from projections.status.held import HeldRows


def test_staged_rows_are_held_only_once_committed():
    held: HeldRows[str] = HeldRows(limit=10)
    held.stage({("p", "a"): "a1"}, [])
    assert held.holds(("p", "a")) and held.get(("p", "a")) == "a1"  # the open transaction sees it
    held.rolled_back()
    assert not held.holds(("p", "a")) and len(held) == 0
    held.stage({("p", "a"): "a1"}, [])
    held.committed()
    held.stage({("p", "a"): "a2"}, [])
    held.rolled_back()
    assert held.get(("p", "a")) == "a1"


def test_the_least_recently_used_rows_go_first_never_the_batch_own():
    held: HeldRows[str] = HeldRows(limit=3)
    held.stage({("p", k): k for k in "abc"}, [])
    held.committed()
    held.stage({("p", "a"): "a"}, [])  # used again: now the most recent
    held.committed()
    batch = {("p", "b"): "b", ("p", "d"): "d"}  # d is new: one row must go, and b is in use
    assert held.to_let_go(batch) == [(("p", "c"), "c")]
    held.stage(batch, [("p", "c")])
    assert not held.holds(("p", "c"))  # given back in this transaction: read from the table
    held.committed()
    assert len(held) == 3 and not held.holds(("p", "c"))


def test_a_row_let_go_and_taken_back_in_one_transaction_stays_held():
    held: HeldRows[str] = HeldRows(limit=1)
    held.stage({("p", "a"): "a"}, [])
    held.committed()
    assert held.to_let_go({("p", "b"): "b"}) == [(("p", "a"), "a")]
    held.stage({("p", "b"): "b"}, [("p", "a")])
    assert held.to_let_go({("p", "a"): "a2"}) == []  # b is staged: it stays; over the limit
    held.stage({("p", "a"): "a2"}, [])  # a taken back from the table
    held.committed()
    assert held.get(("p", "a")) == "a2" and held.holds(("p", "b"))


def test_all_rows_are_taken_only_outside_a_transaction():
    held: HeldRows[str] = HeldRows(limit=5)
    held.stage({("p", "a"): "a"}, [])
    with pytest.raises(RuntimeError, match="open transaction"):
        held.take_all()
    held.committed()
    assert held.take_all() == ["a"] and len(held) == 0
    with pytest.raises(ValueError, match="at least one"):
        HeldRows(limit=0)
