"""HTTP query API (Litestar): read models, read-your-writes via ``min_position``, streamed exports."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar import MediaType, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

from events import ENCODER, Reply
from events.errors import Rejected, http_status
from services.query.params import One
from services.query.queries import Queries

CSV_COLUMNS = (
    "position",
    "subject",
    "project_id",
    "milestone_id",
    "type",
    "event_id",
    "actor",
    "source",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "schema_version",
    "payload",
)


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(body), status_code=status, media_type=MediaType.JSON)


async def _answer(call: Callable[[], Awaitable[Any]]) -> Response[bytes]:
    try:
        return _json(await call())
    except Rejected as exc:
        return _json(Reply.fail(exc.code, exc.message), http_status(exc.code))


def _params(request: Request, **path: str) -> dict[str, Any]:
    return {**dict(request.query_params), **path}


def query_routes(queries: Queries, stream_last: Callable[[], Awaitable[int]]) -> list:
    @get(
        "/milestones/{milestone_id:str}", summary="A milestone's status (project_id disambiguates)"
    )
    async def milestone(request: Request, milestone_id: FromPath[str]) -> Response[bytes]:
        return await _answer(lambda: queries.milestone(_params(request, milestone_id=milestone_id)))

    @get(
        "/projects/{project_id:str}/milestones",
        summary="A project's milestones: health, kind, phase, due_from, due_to, sort, limit, cursor",
    )
    async def project_milestones(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        return await _answer(
            lambda: queries.project_milestones(_params(request, project_id=project_id))
        )

    @get("/milestones/{milestone_id:str}/history", summary="Schedule history of a milestone")
    async def history(request: Request, milestone_id: FromPath[str]) -> Response[bytes]:
        return await _answer(lambda: queries.history(_params(request, milestone_id=milestone_id)))

    @get(
        "/projects/{project_id:str}/report",
        summary="Planned vs actual: per milestone reference (baseline) and actual/forecast date, slip, "
        "reschedules, on time; on-time rate, mean and worst slip, schedule variance, forecast finish. "
        "as_of=DATE or position=N: as the project stood then; baseline=NAME; compare_as_of / compare_position",
    )
    async def project_report(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        return await _answer(lambda: queries.report(_params(request, project_id=project_id)))

    @get(
        "/projects/{project_id:str}/trend",
        summary="Milestone trend analysis: each milestone's forecast at every report date (status reports, "
        "reschedules, weekly cut-offs); until=DATE",
    )
    async def project_trend(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        return await _answer(lambda: queries.trend(_params(request, project_id=project_id)))

    @get(
        "/projects",
        summary="Every project: goals, milestones by health, next milestone, expected finish",
    )
    async def projects(request: Request) -> Response[bytes]:
        return await _answer(lambda: queries.projects(_params(request)))

    @get(
        "/projects/{project_id:str}",
        summary="One project: goals, milestones by health, next milestone, expected finish",
    )
    async def project(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        async def one() -> object:
            page = await queries.projects(_params(request, project_id=project_id))
            return One(page.data[0], page.position, page.stale)

        return await _answer(one)

    @get(
        "/projects/{project_id:str}/status-reports",
        summary="Status updates people posted (StatusReported), newest first; milestone_id narrows",
    )
    async def status_reports(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        return await _answer(
            lambda: queries.status_reports(_params(request, project_id=project_id))
        )

    @get(
        "/projects/{project_id:str}/subscriptions",
        summary="Stakeholders' webhooks for a project (no secrets)",
    )
    async def subscriptions(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        return await _answer(lambda: queries.subscriptions(_params(request, project_id=project_id)))

    @get(
        "/projects/{project_id:str}/digest",
        summary="Preview of the project digest: every milestone's health and what changed since the last digest",
    )
    async def digest_preview(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        params = {
            k: v
            for k, v in _params(request, project_id=project_id).items()
            if k not in ("record", "send")
        }
        return await _answer(lambda: queries.digest(params))

    @post(
        "/projects/{project_id:str}/digest",
        status_code=200,
        summary="Build the digest now, record it and queue it for the project's subscribers",
    )
    async def digest_send(request: Request, project_id: FromPath[str]) -> Response[bytes]:
        return await _answer(
            lambda: queries.digest({**_params(request, project_id=project_id), "send": "true"})
        )

    @get(
        "/deliveries",
        summary="Webhook delivery log: project_id, milestone_id, stakeholder, status "
        "(pending,delivered,failed), kind, cursor, limit; each with its attempts",
    )
    async def deliveries(request: Request) -> Response[bytes]:
        return await _answer(lambda: queries.deliveries(_params(request)))

    @post(
        "/deliveries/{delivery_id:str}/retry",
        status_code=200,
        summary="Send a failed delivery again now",
    )
    async def retry_delivery(delivery_id: FromPath[str]) -> Response[bytes]:
        return await _answer(lambda: queries.retry_delivery({"id": delivery_id}))

    @get(
        "/audit",
        summary="Audit trail: project_id, milestone_id, actor, source, type, from, to, "
        "correlation_id, cursor, limit; format=jsonl|csv streams every match",
    )
    async def audit(request: Request) -> Response[bytes] | Stream:
        params = _params(request)
        fmt = params.get("format") or "json"
        if fmt == "json":
            return await _answer(lambda: queries.audit(params))
        if fmt not in ("jsonl", "csv"):
            return _json(
                Reply.fail("invalid", f"format must be json, jsonl or csv, got {fmt!r}"), 400
            )
        try:
            queries.audit_filter(params)  # validate before the stream starts
            position, stale = await queries.consistent("audit", params)
        except Rejected as exc:
            return _json(Reply.fail(exc.code, exc.message), 400)
        rows = queries.audit_export(params)
        headers = {"x-read-position": str(position), "x-stale": str(stale).lower()}
        if fmt == "jsonl":
            return Stream(_jsonl(rows), media_type="application/x-ndjson", headers=headers)
        return Stream(
            _csv(rows),
            media_type="text/csv",
            headers={**headers, "content-disposition": 'attachment; filename="audit.csv"'},
        )

    @get("/rejections", summary="Inbox messages the intake refused")
    async def rejections(request: Request) -> Response[bytes]:
        return await _answer(lambda: queries.rejections(_params(request)))

    @get("/projections", summary="Each projection's position, lag, rate and parked count")
    async def projections() -> Response[bytes]:
        return await _answer(lambda: _projections(queries, stream_last))

    @get("/parked", summary="Events a projection could not apply")
    async def parked(request: Request) -> Response[bytes]:
        return await _answer(lambda: queries.parked(_params(request)))

    return [
        milestone,
        project_milestones,
        project_report,
        project_trend,
        history,
        audit,
        rejections,
        projections,
        parked,
        projects,
        project,
        status_reports,
        subscriptions,
        digest_preview,
        digest_send,
        deliveries,
        retry_delivery,
    ]


async def _projections(queries: Queries, stream_last: Callable[[], Awaitable[int]]) -> list[dict]:
    return await queries.projections(await stream_last())


async def _jsonl(rows: AsyncIterator) -> AsyncIterator[bytes]:
    async for row in rows:
        yield ENCODER.encode(dict(row)) + b"\n"


async def _csv(rows: AsyncIterator) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    n = 0
    async for row in rows:
        values = [row[c] for c in CSV_COLUMNS]
        values[-1] = ENCODER.encode(values[-1]).decode()
        writer.writerow(["" if v is None else v for v in values])
        n += 1
        if n % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
