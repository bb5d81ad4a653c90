"""The status rows a rebuild holds in memory from one batch to the next.

A rebuild's status tables are its own (a shadow schema no query reads), so the rows its batches
change need not go back to the table after every batch. On the benchmark's log, where each
project's events are interleaved with 255 others' as the intake appends them, nearly every
event changed a row that the batch before had written, and each batch took those rows out of
the table and wrote them back (``DELETE … RETURNING`` their JSON, the decode, the columns'
encoding and a binary ``COPY``). Held here, a row is read from the table at most once (its
milestone's first event, or after it was let go) and written back once, when it has gone quiet
or when the rebuild has caught up: status alone took 13-21 % less CPU per event (two
interleaved A/Bs on that log, 2026-12-07).

Memory stays bounded: at most ``limit`` rows are held (and those of the batch in hand); beyond
it the least recently used ones go back to the table, in the transaction of the batch that
needed the room. A row is in one place at a time, here or in the table.

Transactions: what a batch takes, changes and lets go is staged, and becomes what is held only
when the runner's transaction commits (``committed``). A rollback (a batch retried, an event
parked one by one in savepoints) forgets the staged rows (``rolled_back``): the table has the
rows it gave back again, so nothing is applied twice and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Generic, TypeVar

Key = tuple[str, str]
Row = TypeVar("Row")

# about 3.5 KB a row (a milestone of ten tasks with due dates and two dependencies, measured
# with tracemalloc): 10,000 rows ~ 35 MB. The rows in play at once are those of the projects
# being worked on, a few thousand in the benchmark's log (256 publishers, ten milestones a
# project); a row let go too early is only read back from the table once more.
HELD_ROWS = 10_000


class HeldRows(Generic[Row]):
    def __init__(self, limit: int | None = None) -> None:
        limit = HELD_ROWS if limit is None else limit  # read now: a test may lower it
        if limit < 1:
            raise ValueError("hold at least one row")
        self.limit = limit
        self._held: dict[Key, Row] = {}  # least recently used first
        self._staged: dict[Key, Row] = {}  # taken or changed in the open transaction
        self._leaving: set[Key] = set()  # given back to the table in the open transaction

    def __len__(self) -> int:
        return len(self._held)

    def holds(self, key: Key) -> bool:
        return key in self._staged or (key in self._held and key not in self._leaving)

    def get(self, key: Key) -> Row:
        """A held row (``holds(key)`` first)."""
        found = self._staged.get(key)
        return self._held[key] if found is None else found

    def to_let_go(self, batch: Collection[Key]) -> list[tuple[Key, Row]]:
        """The least recently used held rows that must go back to the table for ``batch``'s rows
        (the rows it takes or changes) to fit within the limit; never one of ``batch``'s own."""
        coming = sum(1 for k in batch if k not in self._held or k in self._leaving)
        excess = len(self._held) - len(self._leaving) + coming - self.limit
        out: list[tuple[Key, Row]] = []
        if excess <= 0:
            return out
        for key, row in self._held.items():
            if key in batch or key in self._leaving or key in self._staged:
                continue
            out.append((key, row))
            if len(out) == excess:
                break
        return out

    def stage(self, rows: Mapping[Key, Row], let_go: Iterable[Key]) -> None:
        """What one apply took and changed (``rows``), and what it gave back to the table: to
        be held once the transaction commits. Call it when every write of the apply is done."""
        self._staged.update(rows)
        self._leaving.update(let_go)

    def committed(self) -> None:
        for key in self._leaving:
            self._held.pop(key, None)
        for key, row in self._staged.items():
            self._held.pop(key, None)  # to the end: the most recently used
            self._held[key] = row
        self.rolled_back()

    def rolled_back(self) -> None:
        self._staged.clear()
        self._leaving.clear()

    def take_all(self) -> list[Row]:
        """Every held row, to be written back (the caller fails the rebuild if it cannot)."""
        if self._staged or self._leaving:
            raise RuntimeError("rows staged in an open transaction: commit or roll back first")
        rows = list(self._held.values())
        self._held.clear()
        return rows
