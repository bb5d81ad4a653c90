"""Read-model queries shared by HTTP, NATS request/reply and the CLI.

Every query takes string parameters (HTTP query string, or a JSON object over NATS), validates
them with messages that say what to fix, and answers ``Page``/``One`` envelopes carrying the
read position. ``min_position`` waits (bounded) for the projection to pass a position the
intake returned: read-your-writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg
import structlog

from events import decode_stored
from events.common import ID_PATTERN
from events.errors import Rejected
from events.subjects import milestones_of, project_subject
from projections import db
from projections.status import StatusRow
from projections.status import queries as status_queries
from projections.watch import CheckpointWatcher
from services.domain import health, reporting
from services.domain.health import HEALTH
from services.eventlog.log import EventLog
from services.query.notify_queries import NotifyQueries
from services.query.params import (
    ID,
    MAX_LIMIT,
    MAX_WAIT,
    One,
    Page,
    bad,
    decode_cursor,
    encode_cursor,
    p_date,
    p_int,
    p_list,
    p_time,
)

log = structlog.get_logger("milestones.query")
# -- queries ----------------------------------------------------------------------------------------
KINDS = ("time", "event", "technical")
SORTS = {"order": ("order", int), "due": ("due", dt.date.fromisoformat), "name": ("name", str)}


# -- evaluation: report and trend, computed from the event log (time travel is a cut of the log) ---------


async def project_events(log_: EventLog, project_id: object) -> list[reporting.Positioned]:
    if not isinstance(project_id, str) or not ID.fullmatch(
        project_id
    ):  # it becomes part of a subject
        raise bad(f"project_id must match {ID_PATTERN}, got {project_id!r}")
    own, milestones = await asyncio.gather(
        log_.read_subject(project_subject(project_id)), log_.read_subject(milestones_of(project_id))
    )
    msgs = [*own, *milestones]
    if not msgs:
        raise Rejected("not_found", f"project {project_id} is not known")
    return sorted(((m.seq, decode_stored(m.data)) for m in msgs), key=lambda pe: pe[0])


def _report(
    project_id: str, events: list, today: dt.date, params: Mapping[str, Any], prefix: str = ""
) -> reporting.Report:
    as_of, position = (
        p_date(params, f"{prefix}as_of"),
        p_int(params, f"{prefix}position", 0) or None,
    )
    baseline = params.get("baseline") or None
    try:
        return reporting.report(
            project_id, events, today=today, as_of=as_of, position=position, baseline=baseline
        )
    except KeyError:
        raise Rejected("not_found", f"project {project_id} has no baseline {baseline!r}") from None


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class Queries(NotifyQueries):
    def __init__(
        self,
        pool: asyncpg.Pool,
        watcher: CheckpointWatcher,
        log_: EventLog,
        today: Callable[[], dt.date] = today_utc,
        at_risk_gap: int = health.DEFAULT_GAP,
    ) -> None:
        self.pool = pool
        self.at_risk_gap = at_risk_gap
        self.watcher = watcher
        self.log = log_
        self.today = today  # the clock is an input: tests pin it

    async def report(self, params: Mapping[str, Any]) -> One:
        """Planned vs actual. ``as_of``/``position``: as the project stood then; ``compare_as_of``/
        ``compare_position``: also that point, with what moved between the two."""
        pid = params.get("project_id")
        events = await project_events(self.log, pid)
        now = _report(str(pid), events, self.today(), params)
        if not (params.get("compare_as_of") or params.get("compare_position")):
            return One(now, now.position)
        then = _report(str(pid), events, self.today(), params, "compare_")
        return One(
            {"now": now, "then": then, "changes": reporting.compare(then, now)}, now.position
        )

    async def trend(self, params: Mapping[str, Any]) -> One:
        """Milestone trend analysis data: forecast per milestone at each report date (``until``: last day)."""
        pid = params.get("project_id")
        events = await project_events(self.log, pid)
        result = reporting.trend(
            str(pid), events, today=self.today(), until=p_date(params, "until")
        )
        return One(result, result.position)

    async def consistent(self, projection: str, params: Mapping[str, Any]) -> tuple[int, bool]:
        wanted = p_int(params, "min_position", 0)
        timeout = p_int(params, "wait_ms", 5000, 0, int(MAX_WAIT * 1000)) / 1000
        if wanted:
            position, reached = await self.watcher.wait(projection, wanted, timeout)
            return position, not reached
        return self.watcher.positions.get(projection, 0), False

    async def _project_rows(self, project_id: str) -> list[StatusRow]:
        return (await status_queries.load(self.pool, [project_id]))[project_id]

    def _judged(self, rows: list[StatusRow]) -> list[dict[str, Any]]:
        return health.judged(rows, self.today(), self.at_risk_gap)

    async def milestone(self, params: Mapping[str, Any]) -> One:
        position, stale = await self.consistent("status", params)
        mid, pid = params.get("milestone_id"), params.get("project_id")
        if not pid:
            owners = await self.pool.fetch(
                "SELECT project_id FROM ms_status WHERE milestone_id = $1", mid
            )
            if len(owners) > 1:
                raise Rejected(
                    "conflict",
                    f"milestone id {mid} exists in projects "
                    f"{', '.join(r['project_id'] for r in owners)}: add project_id",
                )
            pid = owners[0]["project_id"] if owners else None
        # health needs the predecessors: the whole project is judged (one indexed read)
        found = (
            [
                r
                for r in self._judged(await self._project_rows(str(pid)))
                if r["milestone_id"] == mid
            ]
            if pid
            else []
        )
        if not found:
            where = f" in project {params.get('project_id')}" if params.get("project_id") else ""
            raise Rejected(
                "not_found",
                f"milestone {mid}{where} is not known (yet: pass min_position to wait for a write)",
            )
        return One(found[0], position, stale)

    async def project_milestones(self, params: Mapping[str, Any]) -> Page:
        """Judged together (health depends on predecessors), then filtered, sorted and paged."""
        position, stale = await self.consistent("status", params)
        pid = params.get("project_id")
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        sort = str(params.get("sort") or "order")
        desc = sort.startswith("-")
        if sort.lstrip("-") not in SORTS:
            raise bad(
                f"sort must be one of {', '.join(SORTS)} (prefix - for descending), got {sort!r}"
            )
        column, parse = SORTS[sort.lstrip("-")]
        wanted_health = p_list(params, "health", HEALTH)
        kinds = p_list(params, "kind", KINDS)
        phase = params.get("phase") or None
        due_from, due_to = p_date(params, "due_from"), p_date(params, "due_to")
        cursor = decode_cursor(params)
        after: tuple[Any, str] | None = None
        if cursor is not None:
            try:
                after = (parse(cursor[0]), str(cursor[1]))
            except Exception:
                raise bad(
                    "cursor does not fit this sort: pass next_cursor with the same sort"
                ) from None
        rows = await self._project_rows(str(pid))
        if not rows and not await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE project_id = $1)", pid
        ):
            raise Rejected("not_found", f"project {pid} is not known")
        judged = [
            r
            for r in self._judged(rows)
            if (wanted_health is None or r["health"] in wanted_health)
            and (kinds is None or r["kind"] in kinds)
            and (phase is None or r["phase"] == phase)
            and (due_from is None or r["due"] >= due_from)
            and (due_to is None or r["due"] <= due_to)
        ]
        judged.sort(key=lambda r: (r[column], r["milestone_id"]), reverse=desc)
        if after is not None:
            judged = [
                r
                for r in judged
                if (
                    (r[column], r["milestone_id"]) < after
                    if desc
                    else (r[column], r["milestone_id"]) > after
                )
            ]
        next_cursor = None
        if len(judged) > limit:
            judged = judged[:limit]
            key = judged[-1][column]
            next_cursor = encode_cursor(
                [key.isoformat() if isinstance(key, dt.date) else key, judged[-1]["milestone_id"]]
            )
        return Page(judged, position, next_cursor, stale)

    async def projects(self, params: Mapping[str, Any]) -> Page:
        """Every project with its goals, milestones by health, next milestone and expected finish."""
        position, stale = await self.consistent("status", params)
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        after = str((decode_cursor(params) or [""])[0])
        where, args = "project_id > $1", [after]
        if params.get("project_id"):
            where += " AND project_id = $2"
            args.append(str(params["project_id"]))
        projects = await self.pool.fetch(
            "SELECT project_id, name, goals, dependency_policy, created_at, position FROM ms_projects "
            f"WHERE {where} ORDER BY project_id LIMIT {limit + 1}",
            *args,
        )
        page = projects[:limit]
        rows = await status_queries.load(self.pool, [p["project_id"] for p in page])
        out = [{**dict(p), **health.summary(self._judged(rows[p["project_id"]]))} for p in page]
        if params.get("project_id") and not out:
            raise Rejected("not_found", f"project {params['project_id']} is not known")
        next_cursor = encode_cursor([page[-1]["project_id"]]) if len(projects) > limit else None
        return Page(out, position, next_cursor, stale)

    async def status_reports(self, params: Mapping[str, Any]) -> Page:
        """Status updates people posted (``StatusReported``), newest first; ``milestone_id`` narrows."""
        position, stale = await self.consistent("status", params)
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        args: list[Any] = [params.get("project_id")]
        where = "project_id = $1"
        if params.get("milestone_id"):
            args.append(str(params["milestone_id"]))
            where += " AND milestone_id = $2"
        if (cursor := decode_cursor(params)) is not None:
            args.append(int(cursor[0]))
            where += f" AND position < ${len(args)}"
        rows = await self.pool.fetch(
            "SELECT position, project_id, milestone_id, reported_at, actor, health, note FROM ms_status_reports "
            f"WHERE {where} ORDER BY position DESC LIMIT {limit + 1}",
            *args,
        )
        next_cursor = encode_cursor([rows[limit - 1]["position"]]) if len(rows) > limit else None
        return Page([dict(r) for r in rows[:limit]], position, next_cursor, stale)

    async def history(self, params: Mapping[str, Any]) -> Page:
        position, stale = await self.consistent("history", params)
        mid, pid = params.get("milestone_id"), params.get("project_id")
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        after = p_int(params, "cursor_position", 0)
        if (cursor := decode_cursor(params)) is not None:
            after = int(cursor[0])
        args: list[Any] = [mid, after]
        extra = ""
        if pid:
            args.append(pid)
            extra = " AND project_id = $3"
        rows = await self.pool.fetch(
            "SELECT position, project_id, milestone_id, occurred_at, recorded_at, type, old_due, new_due, reason, "
            f"actor, source FROM ms_history WHERE milestone_id = $1 AND position > $2{extra} "
            f"ORDER BY position LIMIT {limit + 1}",
            *args,
        )
        if not rows and not after:
            await self.milestone({"milestone_id": mid, "project_id": pid})  # 404 when unknown
        next_cursor = encode_cursor([rows[limit - 1]["position"]]) if len(rows) > limit else None
        return Page([dict(r) for r in rows[:limit]], position, next_cursor, stale)

    def audit_filter(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for param, column in (
            ("project_id", "project_id"),
            ("milestone_id", "milestone_id"),
            ("actor", "actor"),
            ("source", "source"),
            ("type", "type"),
            ("correlation_id", "correlation_id"),
        ):
            if params.get(param):
                args.append(str(params[param]))
                where.append(f"{column} = ${len(args)}")
        for param, op in (("from", ">="), ("to", "<")):
            if (t := p_time(params, param)) is not None:
                args.append(t)
                where.append(f"occurred_at {op} ${len(args)}")
        if (cursor := decode_cursor(params)) is not None:
            args.append(int(cursor[0]))
            where.append(f"position > ${len(args)}")
        return (" WHERE " + " AND ".join(where)) if where else "", args

    AUDIT_COLUMNS = (
        "position, subject, project_id, milestone_id, type, event_id, actor, source, occurred_at, "
        "recorded_at, correlation_id, causation_id, schema_version, payload"
    )

    async def audit(self, params: Mapping[str, Any]) -> Page:
        position, stale = await self.consistent("audit", params)
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        where, args = self.audit_filter(params)
        rows = await self.pool.fetch(
            f"SELECT {self.AUDIT_COLUMNS} FROM audit_events{where} ORDER BY position LIMIT {limit + 1}",
            *args,
        )
        next_cursor = encode_cursor([rows[limit - 1]["position"]]) if len(rows) > limit else None
        return Page([dict(r) for r in rows[:limit]], position, next_cursor, stale)

    async def audit_export(self, params: Mapping[str, Any]) -> AsyncIterator[asyncpg.Record]:
        """Every matching audit row, streamed through a server-side cursor (never all in memory)."""
        where, args = self.audit_filter(params)
        async with self.pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                f"SELECT {self.AUDIT_COLUMNS} FROM audit_events{where} ORDER BY position",
                *args,
                prefetch=500,
            ):
                yield row

    async def rejections(self, params: Mapping[str, Any]) -> Page:
        position, stale = await self.consistent("rejections", params)
        limit = p_int(params, "limit", 100, 1, MAX_LIMIT)
        after = int((decode_cursor(params) or [0])[0])
        rows = await self.pool.fetch(
            "SELECT position, inbox_seq, subject, received_at, code, message, payload FROM audit_rejections "
            f"WHERE position > $1 ORDER BY position LIMIT {limit + 1}",
            after,
        )
        next_cursor = encode_cursor([rows[limit - 1]["position"]]) if len(rows) > limit else None
        return Page([dict(r) for r in rows[:limit]], position, next_cursor, stale)

    async def projections(self, stream_last: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT c.projection, c.position, c.pending, c.rate, c.updated_at, "
            f"(SELECT count(*) FROM {db.SCHEMA}.parked_events p WHERE p.projection = c.projection) AS parked "
            f"FROM {db.SCHEMA}.checkpoints c ORDER BY c.projection"
        )
        return [{**dict(r), "stream_last": stream_last} for r in rows]

    async def parked(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        args: list[Any] = []
        where = ""
        if params.get("projection"):
            args.append(str(params["projection"]))
            where = " WHERE projection = $1"
        rows = await self.pool.fetch(
            f"SELECT projection, position, subject, type, error, attempts, parked_at, payload "
            f"FROM {db.SCHEMA}.parked_events{where} ORDER BY projection, position LIMIT 1000",
            *args,
        )
        return [dict(r) for r in rows]
