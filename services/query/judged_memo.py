"""A project's judgement, kept while nothing it was judged from has changed.

Health is judged at query time (``services.domain.health``: it depends on the day), over the
whole project, even for one milestone: its predecessors, the project's pace and its critical
path all take part. On the benchmark's projects (10 milestones of 10 tasks) that is 190 us of
the query process's CPU per read: decoding the 10 rows from their JSON (``from_json``) and
judging them, about a sixth of a milestone-by-id request. A dashboard or a poller asks for the
same projects again and again, and between two writes to a project the answer is the same.

So the query service keeps, per project, the rows as the database sent them (their JSON text),
the project's target, the day and the at-risk gap, with what was judged from them. A read
compares what it fetched with what is kept (the texts byte for byte, in order: a comparison,
no hash to trust) and judges again on any difference: a write to any of the project's rows, a
new or removed milestone, a new target, a new day. Nothing is invalidated from outside, so
nothing can be missed: every read still reads the database, and the memo only saves the
decode and the judgement of rows it has seen. A read-your-writes read (``min_position``) is
judged from the rows it fetched after the wait, like any other.

Bounded by the size of what it keeps, not by a count of projects (nothing bounds a project's
milestones or tasks): ``MEMO_TEXT_BUDGET`` characters of row JSON in all by default
(``MILESTONES_QUERY_MEMO_CHARS``; 0 keeps nothing), the projects read least recently out
first; a project larger than the whole budget is judged and not kept. A project without rows
(an unknown id) is not kept either, so that reads of ids that do not exist cannot push out the
projects people look at. Single-threaded use on the service's event loop: no lock.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
from prometheus_client import Counter

from projections.status import StatusRow, from_json
from services.domain import health

# characters of row JSON kept in all. The benchmark's project (10 milestones of 10 tasks) has
# about 7,600, and keeps about 29 KB in memory with its decoded rows and verdicts (tracemalloc):
# about 520 such projects, 15 MB
MEMO_TEXT_BUDGET = 4_000_000

MEMO = Counter(
    "milestones_query_judged_total",
    "Projects judged for a read: judged again (miss) or taken as judged before (hit)",
    ["outcome"],
)
_HIT, _MISS = MEMO.labels("hit"), MEMO.labels("miss")


class Judged(NamedTuple):
    rows: list[StatusRow]  # in milestone order, as the database sent them
    verdicts: dict[str, health.Judgement]  # by milestone id

    def presented(self) -> list[tuple[StatusRow, dict]]:
        """Each row beside its health as the API shows it (``health.present``)."""
        return [(r, self.one(r)) for r in self.rows]

    def one(self, row: StatusRow) -> dict:
        """``row`` as the API shows it, in a dict of its own whose lists and dicts (tasks, due
        dates, predecessors, reasons, blockers, ...) are copies: an answer shares with the memo
        only what nothing changes in place (strings, numbers, dates, the frozen row)."""
        shown = health.present(row, self.verdicts[row.milestone_id])
        for name, value in shown.items():
            if type(value) is dict:
                shown[name] = dict(value)
            elif type(value) is list:
                shown[name] = [
                    msgspec.structs.replace(v) if isinstance(v, msgspec.Struct) else v
                    for v in value
                ]
        return shown


_Key = tuple[tuple[str, ...], dt.date | None, dt.date, int]


class JudgedMemo:
    def __init__(self, budget: int = MEMO_TEXT_BUDGET) -> None:
        """``budget``: characters of row JSON kept in all; 0 keeps nothing (every read judged)."""
        if budget < 0:
            raise ValueError(f"the memo's budget is 0 or more characters, not {budget}")
        self.budget = budget
        self.kept_chars = 0
        self._kept: collections.OrderedDict[str, tuple[_Key, Judged, int]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._kept)

    def judged(
        self,
        project_id: str,
        texts: Sequence[str],
        target: dt.date | None,
        today: dt.date,
        gap: int,
    ) -> Judged:
        """The project's rows (``texts``: each row's JSON as ``ms_status`` gives it, in milestone
        order) and their verdicts as of ``today``: judged now, or as judged before from the
        very same texts, target, day and gap."""
        if not texts:
            return Judged([], {})
        key: _Key = (tuple(texts), target, today, gap)
        found = self._kept.get(project_id)
        if found is not None and found[0] == key:
            self._kept.move_to_end(project_id)
            _HIT.inc()
            return found[1]
        _MISS.inc()
        rows = [from_json(text) for text in texts]
        made = Judged(rows, health.judge(rows, today, gap, target))
        if found is not None:
            del self._kept[project_id]
            self.kept_chars -= found[2]
        size = sum(len(text) for text in texts)
        if size <= self.budget:
            self._kept[project_id] = (key, made, size)
            self.kept_chars += size
            while self.kept_chars > self.budget:
                _, (_, _, freed) = self._kept.popitem(last=False)
                self.kept_chars -= freed
        return made
