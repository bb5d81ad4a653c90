"""The queries: each takes its typed parameters (``services.query.requests``), reads a read model
(through the SQL beside it in ``projections/``) or the event log, and answers a ``Page`` or
``One`` envelope carrying the read position. ``min_position`` waits (bounded) for the projection
to pass a position the intake returned: read-your-writes.

``services.query.registry`` names them and builds HTTP, NATS and the CLI from that list.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import structlog

from events import decode_stored
from events.common import ID_PATTERN
from events.errors import Rejected
from events.subjects import milestones_of, project_subject
from projections import runner_queries
from projections.audit import queries as audit_queries
from projections.history import queries as history_queries
from projections.status import StatusRow, sign_off
from projections.status import queries as status_queries
from projections.storable import maybe_timestamp
from projections.watch import CheckpointWatcher
from services.domain import health, reporting
from services.eventlog.log import EventLog
from services.notify.redact import redact_bytes, redact_json_text
from services.query import requests as q
from services.query.judged_memo import MEMO_TEXT_BUDGET, Judged, JudgedMemo
from services.query.notify_queries import NotifyQueries
from services.query.params import (
    One,
    Page,
    Params,
    bad,
    decode_cursor,
    encode_cursor,
    page_of,
    time_cursor,
    time_key,
)

logger = structlog.get_logger("milestones.query")

ID = re.compile(ID_PATTERN)
PARKED_SHOWN = 1000


async def project_events(log: EventLog, project_id: object) -> list[reporting.Positioned]:
    """The project's events from the log, in stream order (time travel is a cut of these)."""
    if not isinstance(project_id, str) or not ID.fullmatch(project_id):
        raise bad(f"project_id must match {ID_PATTERN}, got {project_id!r}")  # a subject token
    own, milestones = await asyncio.gather(
        log.read_subject(project_subject(project_id)), log.read_subject(milestones_of(project_id))
    )
    msgs = sorted([*own, *milestones], key=lambda m: m.seq)
    if not msgs:
        raise Rejected("not_found", f"project {project_id} is not known")
    events: list[reporting.Positioned] = []
    for m in msgs:
        try:
            events.append((m.seq, decode_stored(m.data)))
        except (msgspec.MsgspecError, ValueError, TypeError) as exc:
            # What the projections park (an event this version cannot decode), with the
            # project's later events behind it: the pages show the project as it stood before
            # it, as the read models do, until it is replayed.
            logger.warning(
                "undecodable event: the project is shown as it stood before it",
                project_id=project_id,
                position=m.seq,
                error=str(exc)[:300],
            )
            break
    return events


def shown_payload(payload: str | None) -> str | None:
    """A stored payload as shown: secrets redacted (``services.notify.redact``)."""
    return None if payload is None else redact_json_text(payload)


def shown_raw(data: bytes) -> dict[str, str | None]:
    """A raw message (a parked event) as shown: text where it is UTF-8, base64 otherwise;
    secrets redacted either way (as the intake records rejections)."""
    try:
        return {"payload": redact_json_text(data.decode()), "payload_base64": None}
    except UnicodeDecodeError:
        return {"payload": None, "payload_base64": base64.b64encode(redact_bytes(data)).decode()}


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def audit_filter(p: q.AuditParams) -> audit_queries.AuditFilter:
    equal = {name: getattr(p, name) for name in audit_queries.FILTERED}
    return audit_queries.AuditFilter(
        equal={k: v for k, v in equal.items() if v is not None},
        # any RFC 3339 time, also one whose UTC instant is outside years 1-9999 (asyncpg refuses
        # those): saturated as the audit read model stores such times
        occurred_from=maybe_timestamp(p.occurred_from),
        occurred_to=maybe_timestamp(p.occurred_to),
        after=int((decode_cursor(p.cursor) or [0])[0]),
    )


class Queries(NotifyQueries):
    def __init__(
        self,
        pool: asyncpg.Pool,
        watcher: CheckpointWatcher,
        log: EventLog,
        today: Callable[[], dt.date] = today_utc,
        at_risk_gap: int = health.DEFAULT_GAP,
        memo_chars: int = MEMO_TEXT_BUDGET,
    ) -> None:
        self.pool = pool
        self.at_risk_gap = at_risk_gap
        self.watcher = watcher
        self.log = log
        self.today = today  # the clock is an input: tests pin it
        # projects judged before, kept while their rows are the same (``memo_chars`` of JSON)
        self.memo = JudgedMemo(memo_chars)

    async def consistent(self, projection: str, p: Params) -> tuple[int, bool]:
        """The read model's position, and whether it is still short of ``min_position``."""
        if p.min_position:
            position, reached = await self.watcher.wait(
                projection, p.min_position, p.wait_ms / 1000
            )
            return position, not reached
        return self.watcher.positions.get(projection, 0), False

    # -- evaluation: from the event log (time travel is a cut of the log) -----------------------
    async def report(self, p: q.ReportParams) -> One:
        """Planned vs actual. ``as_of``/``position``: as the project stood then; ``compare_as_of``/
        ``compare_position``: also that point, with what moved between the two."""
        events = await project_events(self.log, p.project_id)
        now = self._report(p, events, p.as_of, p.position)
        if p.compare_as_of is None and not p.compare_position:
            return One(now, now.position)
        then = self._report(p, events, p.compare_as_of, p.compare_position)
        changes = reporting.compare(then, now)
        return One({"now": now, "then": then, "changes": changes}, now.position)

    def _report(
        self,
        p: q.ReportParams,
        events: list[reporting.Positioned],
        as_of: dt.date | None,
        position: int | None,
    ) -> reporting.Report:
        try:
            return reporting.report(
                p.project_id,
                events,
                today=self.today(),
                as_of=as_of,
                position=position or None,
                baseline=p.baseline,
            )
        except KeyError:
            raise Rejected(
                "not_found", f"project {p.project_id} has no baseline {p.baseline!r}"
            ) from None

    async def trend(self, p: q.TrendParams) -> One:
        """Milestone trend analysis: each milestone's expected finish at each report date."""
        events = await project_events(self.log, p.project_id)
        result = reporting.trend(p.project_id, events, today=self.today(), until=p.until)
        return One(result, result.position)

    # -- the status read model --------------------------------------------------------------------
    async def _project_rows(self, project_id: str) -> list[StatusRow]:
        return (await status_queries.load(self.pool, [project_id]))[project_id]

    async def _project_judged(self, project_id: str) -> list[dict[str, Any]]:
        """A project's rows, judged together (health depends on predecessors, floats on the
        project's target), through the memo of projects judged before (``judged_memo``)."""
        return [sign_off.presented(r, j) for r, j in (await self._judged(project_id)).presented()]

    async def _judged(self, project_id: str) -> Judged:
        texts, target = await status_queries.project_texts(self.pool, project_id)
        return self.memo.judged(project_id, texts, target, self.today(), self.at_risk_gap)

    def judged(self, rows: list[StatusRow], target: dt.date | None) -> list[dict[str, Any]]:
        judged = health.judged(rows, self.today(), self.at_risk_gap, target)
        return [sign_off.presented(r, j) for r, j in zip(rows, judged, strict=True)]

    @staticmethod
    def judged_one(judged: Judged, milestone_id: str) -> dict[str, Any] | None:
        """What ``judged`` gives for one milestone of a project judged whole (None: not among
        its rows): health reads the predecessors, the forecast the project's pace, the float its
        finish; only this one is presented."""
        row = next((r for r in judged.rows if r.milestone_id == milestone_id), None)
        if row is None:
            return None
        return sign_off.presented(row, judged.one(row))

    async def milestone(self, p: q.MilestoneParams) -> One:
        position, stale = await self.consistent("status", p)
        pid = p.project_id
        if pid is None:
            owners = await status_queries.milestone_owners(self.pool, p.milestone_id)
            if len(owners) > 1:
                raise Rejected(
                    "conflict",
                    f"milestone id {p.milestone_id} exists in projects {', '.join(owners)}: "
                    "add project_id",
                )
            pid = owners[0] if owners else None
        # health needs the predecessors: the whole project is judged (one indexed read, and the
        # judgement itself only when the project changed since it was last read: ``memo``),
        # this milestone alone presented
        found = self.judged_one(await self._judged(pid), p.milestone_id) if pid else None
        if found is None:
            where = f" in project {p.project_id}" if p.project_id else ""
            raise Rejected(
                "not_found",
                f"milestone {p.milestone_id}{where} is not known "
                "(yet: pass min_position to wait for a write)",
            )
        return One(found, position, stale)

    async def project_milestones(self, p: q.MilestonesParams) -> Page:
        """Judged together (health depends on predecessors), then filtered, sorted and paged."""
        position, stale, judged = await self.matching_milestones(p)
        column = p.sort.lstrip("-")
        next_cursor = None
        if len(judged) > p.limit:
            judged = judged[: p.limit]
            last = judged[-1][column]
            next_cursor = encode_cursor(
                [
                    last.isoformat() if isinstance(last, dt.date) else last,
                    judged[-1]["milestone_id"],
                ]
            )
        return Page(judged, position, next_cursor, stale)

    async def matching_milestones(
        self, p: q.MilestonesParams
    ) -> tuple[int, bool, list[dict[str, Any]]]:
        """Every milestone the filters match, judged, sorted, after the cursor: the pages, and
        the CSV export (``services.query.spreadsheets``), which takes them all."""
        position, stale = await self.consistent("status", p)
        column = p.sort.lstrip("-")
        descending = p.sort.startswith("-")
        after = self._sort_key(column, decode_cursor(p.cursor))
        judged_all = await self._project_judged(p.project_id)
        if not judged_all and not await audit_queries.project_known(self.pool, p.project_id):
            raise Rejected("not_found", f"project {p.project_id} is not known")
        judged = [
            r
            for r in judged_all
            if (p.health is None or r["health"] in p.health)
            and (p.kind is None or r["kind"] in p.kind)
            and (p.phase is None or r["phase"] == p.phase)
            and (p.due_from is None or r["due"] >= p.due_from)
            and (p.due_to is None or r["due"] <= p.due_to)
        ]

        def key(r: dict[str, Any]) -> tuple[Any, str]:
            return r[column], r["milestone_id"]

        judged.sort(key=key, reverse=descending)
        if after is not None:
            judged = [r for r in judged if (key(r) < after if descending else key(r) > after)]
        return position, stale, judged

    @staticmethod
    def _sort_key(column: str, cursor: list[Any] | None) -> tuple[Any, str] | None:
        if cursor is None:
            return None
        parse_key: dict[str, Callable[[Any], Any]] = {
            "order": int,
            "due": dt.date.fromisoformat,
            "name": str,
        }
        try:
            return parse_key[column](cursor[0]), str(cursor[1])
        except (ValueError, TypeError, IndexError):
            raise bad(
                "cursor does not fit this sort: pass next_cursor with the same sort"
            ) from None

    async def _summaries(self, projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = await status_queries.load(self.pool, [p["project_id"] for p in projects])
        return [
            {**p, **health.summary(self.judged(rows[p["project_id"]], p["target"]))}
            for p in projects
        ]

    async def projects(self, p: q.ProjectsParams) -> Page:
        """Every project (``project_id``: that one) with its goals, milestones by health, next
        milestone and expected finish."""
        position, stale = await self.consistent("status", p)
        after = str((decode_cursor(p.cursor) or [""])[0])
        found = await status_queries.projects(
            self.pool, after=after, only=p.project_id, limit=p.limit + 1
        )
        if p.project_id is not None and not found:
            raise Rejected("not_found", f"project {p.project_id} is not known")
        shown, next_cursor = page_of(found, p.limit, "project_id")
        return Page(await self._summaries(shown), position, next_cursor, stale)

    async def project(self, p: q.ProjectParams) -> One:
        """One project: its goals, milestones by health, next milestone, expected finish."""
        position, stale = await self.consistent("status", p)
        found = await status_queries.projects(self.pool, only=p.project_id, limit=1)
        if not found:
            raise Rejected("not_found", f"project {p.project_id} is not known")
        return One((await self._summaries(found))[0], position, stale)

    async def critical_path(self, p: q.ProjectParams) -> One:
        """The chain of milestones that drives the project's finish, and every milestone's
        float (``services.domain.critical_path``, from the forecasts)."""
        position, stale = await self.consistent("status", p)
        found = await status_queries.projects(self.pool, only=p.project_id, limit=1)
        if not found:
            raise Rejected("not_found", f"project {p.project_id} is not known")
        rows = await self._project_rows(p.project_id)
        target = found[0]["target"]
        verdicts, path = health.assess(rows, self.today(), self.at_risk_gap, target)
        by_id = {r.milestone_id: r for r in rows}
        lines = [
            {
                "milestone_id": slack.milestone_id,
                "name": by_id[slack.milestone_id].name,
                "due": by_id[slack.milestone_id].due,
                "expected_finish": verdicts[slack.milestone_id].expected_finish,
                "forecast": verdicts[slack.milestone_id].forecast,
                "early_finish": slack.early_finish,
                "late_finish": slack.late_finish,
                "float_days": verdicts[slack.milestone_id].float_days,
                "critical": slack.critical,
                "drives": slack.drives,
                "health": verdicts[slack.milestone_id].health,
                "achieved": by_id[slack.milestone_id].achieved_at is not None,
            }
            for slack in path.milestones
        ]
        answer = {
            "project_id": p.project_id,
            "today": self.today(),
            "target": target,
            "finish": path.finish,
            "project_float_days": path.project_float_days,
            "chain": path.chain,
            "milestones": lines,
        }
        return One(answer, position, stale)

    async def status_reports(self, p: q.StatusReportsParams) -> Page:
        """Status updates people posted (``StatusReported``), newest first."""
        position, stale = await self.consistent("status", p)
        cursor = decode_cursor(p.cursor)
        rows = await status_queries.status_reports(
            self.pool,
            p.project_id,
            milestone_id=p.milestone_id,
            before=int(cursor[0]) if cursor else None,
            limit=p.limit + 1,
        )
        shown, next_cursor = page_of(rows, p.limit)
        return Page(shown, position, next_cursor, stale)

    async def subscriptions(self, p: q.SubscriptionsParams) -> Page:
        """Who is told about a project (secrets are never shown, only whether one is set)."""
        position, stale = await self.consistent("status", p)
        rows = await status_queries.shown_subscriptions(
            self.pool,
            p.project_id,
            after=int((decode_cursor(p.cursor) or [0])[0]),
            limit=p.limit + 1,
        )
        shown, next_cursor = page_of(rows, p.limit)
        return Page(shown, position, next_cursor, stale)

    # -- history and audit ------------------------------------------------------------------------
    async def history(self, p: q.HistoryParams) -> Page:
        """In time order, (occurred_at, position); the cursor is the last row's pair, so a page
        never repeats or skips a row that was there before it. A back-dated change appended
        later lands before a cursor already handed out: ``cursor_position`` finds it."""
        position, stale = await self.consistent("history", p)
        after = time_key(p.cursor)
        appended_after = p.cursor_position or 0
        rows = await history_queries.milestone_history(
            self.pool,
            p.milestone_id,
            project_id=p.project_id,
            after=after,
            appended_after=appended_after,
            limit=p.limit + 1,
        )
        if not rows and after is None and not appended_after:  # unknown milestone: 404
            known = q.MilestoneParams(milestone_id=p.milestone_id, project_id=p.project_id)
            await self.milestone(known)
        shown = rows[: p.limit]
        next_cursor = time_cursor(shown[-1]) if len(rows) > p.limit else None
        return Page(shown, position, next_cursor, stale)

    async def audit(self, p: q.AuditParams) -> Page:
        position, stale = await self.consistent("audit", p)
        rows = await audit_queries.events(self.pool, audit_filter(p), p.limit + 1)
        shown, next_cursor = page_of(rows, p.limit)
        return Page(shown, position, next_cursor, stale)

    async def audit_export(self, p: q.AuditParams) -> tuple[int, bool, AsyncIterator[Any]]:
        """Every matching audit row, streamed (the filter is checked before the first row)."""
        matching = audit_filter(p)
        position, stale = await self.consistent("audit", p)
        return position, stale, audit_queries.every_event(self.pool, matching)

    async def rejections(self, p: q.RejectionsParams) -> Page:
        position, stale = await self.consistent("rejections", p)
        after = int((decode_cursor(p.cursor) or [0])[0])
        rows = await audit_queries.rejections(self.pool, after=after, limit=p.limit + 1)
        # recorded redacted (services.intake.service); records older than that are redacted here
        rows = [{**r, "payload": shown_payload(r["payload"])} for r in rows]
        shown, next_cursor = page_of(rows, p.limit)
        return Page(shown, position, next_cursor, stale)

    # -- the runner's tables ----------------------------------------------------------------------
    async def projections(self, p: q.ProjectionsParams) -> list[dict[str, Any]]:
        """Each projection's position, lag, rate and parked count, beside the stream's last."""
        rows, last = await asyncio.gather(
            runner_queries.checkpoints(self.pool), self.log.last_sequence()
        )
        return [{**r, "stream_last": last} for r in rows]

    async def parked(self, p: q.ParkedParams) -> list[dict[str, Any]]:
        rows = await runner_queries.parked_events(
            self.pool, projection=p.projection, limit=PARKED_SHOWN
        )
        # parked rows keep the raw bytes (an event stored before secrets were sealed may hold
        # one in clear): secrets are redacted when shown
        return [
            {**r, **shown_raw(r["payload"]), "error": redact_json_text(r["error"])} for r in rows
        ]
