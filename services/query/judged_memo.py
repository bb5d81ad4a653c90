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

Bounded: the ``MEMO_PROJECTS`` projects read last (least recently read out first). A project
without rows (an unknown id) is not kept, so that reads of ids that do not exist cannot push out
the projects people look at. Single-threaded use on the service's event loop: no lock.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

from prometheus_client import Counter

from projections.status import StatusRow, from_json
from services.domain import health

# projects kept: the benchmark's project holds about 8 KB of JSON text for its 10 milestones,
# and its rows and judgements about twice that again, so ~12 MB at most
MEMO_PROJECTS = 512

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
        """Each row beside its health as the API shows it (``health.present``): a new dict each
        call, so that no answer shares a mutable object with the memo but the verdict's own."""
        return [(r, health.present(r, self.verdicts[r.milestone_id])) for r in self.rows]


_Key = tuple[tuple[str, ...], dt.date | None, dt.date, int]
_EMPTY = Judged([], {})


class JudgedMemo:
    def __init__(self, size: int = MEMO_PROJECTS) -> None:
        if size < 1:
            raise ValueError(f"the memo holds at least one project, not {size}")
        self.size = size
        self._kept: collections.OrderedDict[str, tuple[_Key, Judged]] = collections.OrderedDict()

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
            return _EMPTY
        key: _Key = (tuple(texts), target, today, gap)
        found = self._kept.get(project_id)
        if found is not None and found[0] == key:
            self._kept.move_to_end(project_id)
            _HIT.inc()
            return found[1]
        _MISS.inc()
        rows = [from_json(text) for text in texts]
        made = Judged(rows, health.judge(rows, today, gap, target))
        self._kept[project_id] = (key, made)
        self._kept.move_to_end(project_id)
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return made
