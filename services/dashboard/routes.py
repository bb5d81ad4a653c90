"""The dashboard: server-rendered HTML and inline SVG under ``/ui``, served by the query service.

Project pages are computed from the project's events in the log (``model.project_view``), so
``as_of`` time travel is a cut of the log; the projects list and the audit page read the read
models. ``/ui/live`` is a server-sent event stream that says when the status read model moved,
so open pages refresh their ``<main>`` without a reload (and without JavaScript they are plain
pages).

Every route needs a reader (``services.app.auth_http``: a route's ``opt`` names another role);
a browser signs in once at ``/ui/login`` and keeps a session cookie.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect, Stream

from events import event_of, milestone_of
from events.errors import Rejected, http_status
from projections import history, status
from services.auth.principal import Principal
from services.dashboard import audit_view, layout, model, pages, svg
from services.domain import health, reporting
from services.query.params import encode_cursor, p_date, parse
from services.query.queries import Queries, project_events
from services.query.requests import AuditParams, ProjectsParams

HTML = "text/html; charset=utf-8"
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path d="M8 1 L15 8 L8 15 L1 8 Z" '
    'fill="#1565c0"/></svg>'
)


# C0 controls but tab, line feed and carriage return, and lone surrogates: HTML calls them
# errors (and a surrogate cannot be encoded as UTF-8 at all). A log written before the intake
# bounded text may hold them in a name or a note; they are shown as U+FFFD.
_NOT_HTML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _html(body: str, status: int = 200) -> Response[str]:
    return Response(_NOT_HTML.sub("\ufffd", body), status_code=status, media_type=HTML)


def error_page(exc: Rejected) -> Response[str]:
    status = http_status(exc.code)
    return _html(layout.error_page(status, exc.message), status)


async def _page(render: Callable[[], Awaitable[str]]) -> Response[str]:
    try:
        return _html(await render())
    except Rejected as exc:
        return error_page(exc)


async def _svg_file(render: Callable[[], Awaitable[tuple[str, str]]]) -> Response:
    """A chart as a download: the SVG and its file name, or the error page."""
    try:
        body, filename = await render()
    except Rejected as exc:
        return error_page(exc)
    return Response(
        body,
        media_type="image/svg+xml",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _params(request: Request) -> dict[str, Any]:
    return dict(request.query_params)


def dashboard_routes(queries: Queries, closing: asyncio.Event | None = None) -> list:
    """``closing``: set when the service stops, which ends every live stream."""
    views = Views(queries)
    return [
        *site_routes(),
        *projects_routes(views),
        *project_routes(views),
        *trend_routes(views),
        *audit_routes(queries),
        live_route(queries, closing or asyncio.Event()),
    ]


class Views:
    """What the pages are made of, from the event log and the read models."""

    def __init__(self, queries: Queries) -> None:
        self.queries = queries

    async def project(self, pid: str, q: dict[str, Any]) -> tuple[model.ProjectView, list]:
        events = await project_events(self.queries.log, pid)
        as_of = p_date(q, "as_of")
        try:
            view = model.project_view(
                pid,
                events,
                today=self.queries.today(),
                as_of=as_of,
                baseline=q.get("baseline") or None,
                gap=self.queries.at_risk_gap,
            )
        except KeyError:
            raise Rejected(
                "not_found", f"project {pid} has no baseline {q.get('baseline')!r}"
            ) from None
        if (
            not view.rows
            and as_of is not None
            and not any(p for p, _ in reporting.cut(events, as_of=as_of))
        ):
            raise Rejected("not_found", f"project {pid} did not exist yet on {as_of.isoformat()}")
        return view, events

    async def trend(self, project_id: str, q: dict[str, Any]) -> tuple[reporting.Trend, str]:
        events = await project_events(self.queries.log, project_id)
        result = reporting.trend(
            project_id, events, today=self.queries.today(), until=p_date(q, "until")
        )
        return result, model.project_name(events, project_id)

    async def projects_then(self, projects: list[dict[str, Any]], as_of: dt.date) -> list[dict]:
        """The projects as they stood at the end of ``as_of``: folded from each one's log."""
        rows = []
        for p in projects:
            events = reporting.cut(
                await project_events(self.queries.log, p["project_id"]), as_of=as_of
            )
            if not events:
                continue
            folded = sorted(status.fold(events).values(), key=lambda r: (r.ord, r.milestone_id))
            judged_on = min(as_of, self.queries.today())
            target = reporting.fold(events).target
            judged = health.judged(folded, judged_on, self.queries.at_risk_gap, target)
            rows.append({**p, **health.summary(judged)})
        return rows

    async def milestone_page(
        self,
        project_id: str,
        milestone_id: str,
        q: dict[str, Any],
        signing: pages.Signing | None = None,
    ) -> str:
        view, events = await self.project(project_id, q)
        if not any(r.milestone_id == milestone_id for r in view.rows):
            raise Rejected(
                "not_found",
                f"milestone {milestone_id} is not planned in project {project_id}"
                + (f" as of {view.as_of.isoformat()}" if view.as_of else ""),
            )
        cut = reporting.cut(events, as_of=view.as_of)
        mine = [(p, e) for p, e in cut if milestone_of(event_of(e)) == milestone_id]
        rows = history.in_time_order(  # as the history query orders it: time, then position
            [
                dict(zip(history.COLUMNS, r, strict=True))
                for p, e in mine
                for r in history.rows(p, e)
            ]
        )
        audit = [
            {
                "position": p,
                "occurred_at": e.time,
                "type": e.type,
                "actor": e.actor,
                "source": e.source,
                "correlationid": e.correlationid,
                "causationid": e.causationid,
            }
            for p, e in mine
        ]
        tasks = model.tasks_of(events, milestone_id, view.as_of)
        return pages.milestone_page(view, milestone_id, tasks, rows, audit, signing)


def site_routes() -> list[HTTPRouteHandler]:
    @get("/", include_in_schema=False)
    async def root() -> Redirect:
        return Redirect("/ui")

    @get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response[str]:
        return Response(
            FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"}
        )

    return [root, favicon]


def projects_routes(views: Views) -> list[HTTPRouteHandler]:
    @get(
        "/ui",
        summary="Dashboard: every project with counts by health, next milestone, expected finish",
    )
    async def projects(request: Request) -> Response[str]:
        async def render() -> str:
            q = _params(request)
            as_of = p_date(q, "as_of")
            page = await views.queries.projects(
                parse(ProjectsParams, {"cursor": q.get("cursor"), "limit": 50})
            )
            if as_of is None:
                return pages.projects_page(page.data, None, page.next_cursor)
            rows = await views.projects_then(page.data, as_of)
            return pages.projects_page(rows, as_of, page.next_cursor)

        return await _page(render)

    return [projects]


def project_routes(views: Views) -> list[HTTPRouteHandler]:
    @get("/ui/projects/{project_id:str}", summary="Dashboard: a project's Gantt chart")
    async def gantt(request: Request, project_id: FromPath[str]) -> Response[str]:
        async def render() -> str:
            view, _ = await views.project(project_id, _params(request))
            return pages.gantt_page(view, svg.gantt_svg(view, link=f"/ui/projects/{project_id}"))

        return await _page(render)

    @get("/ui/projects/{project_id:str}/gantt.svg", summary="The Gantt chart as an SVG file")
    async def gantt_file(request: Request, project_id: FromPath[str]) -> Response:
        async def render() -> tuple[str, str]:
            view, _ = await views.project(project_id, _params(request))
            suffix = f"-{view.as_of.isoformat()}" if view.as_of else ""
            return svg.gantt_svg(view), f"{project_id}-gantt{suffix}.svg"

        return await _svg_file(render)

    @get("/ui/projects/{project_id:str}/report", summary="Dashboard: planned vs actual")
    async def report(request: Request, project_id: FromPath[str]) -> Response[str]:
        async def render() -> str:
            view, _ = await views.project(project_id, _params(request))
            return pages.report_page(project_id, view.name, view.report)

        return await _page(render)

    @get(
        "/ui/projects/{project_id:str}/milestones/{milestone_id:str}",
        summary="Dashboard: one milestone",
    )
    async def milestone(
        request: Request, project_id: FromPath[str], milestone_id: FromPath[str]
    ) -> Response[str]:
        principal, csrf = request.user, request.scope.get("csrf")
        signing = pages.Signing(
            signer=principal.signer if isinstance(principal, Principal) else None,
            csrf=csrf if isinstance(csrf, str) else None,  # a session's (auth_http)
            query=_params(request),
            form_key=uuid.uuid4().hex,  # a double submit of one form is stored once
        )
        return await _page(
            lambda: views.milestone_page(project_id, milestone_id, _params(request), signing)
        )

    return [gantt, gantt_file, report, milestone]


def trend_routes(views: Views) -> list[HTTPRouteHandler]:
    @get("/ui/projects/{project_id:str}/trend", summary="Dashboard: milestone trend analysis chart")
    async def trend(request: Request, project_id: FromPath[str]) -> Response[str]:
        async def render() -> str:
            q = _params(request)
            result, name = await views.trend(project_id, q)
            table = [
                {
                    "name": s.name,
                    "points": {p.report_date: p.expected_finish.isoformat() for p in s.points},
                }
                for s in result.series
            ]
            forecasts = q.get("forecast") in ("1", "on", "true")
            chart = svg.trend_svg(
                result, title=f"Milestone trend analysis of {name}", forecasts=forecasts
            )
            return pages.trend_page(
                project_id,
                name,
                chart,
                p_date(q, "until"),
                table,
                result.report_dates,
                forecasts=forecasts,
            )

        return await _page(render)

    @get(
        "/ui/projects/{project_id:str}/trend.svg",
        summary="The milestone trend analysis chart as an SVG file",
    )
    async def trend_file(request: Request, project_id: FromPath[str]) -> Response:
        async def render() -> tuple[str, str]:
            q = _params(request)
            result, name = await views.trend(project_id, q)
            chart = svg.trend_svg(
                result,
                title=f"Milestone trend analysis of {name}",
                forecasts=q.get("forecast") in ("1", "on", "true"),
            )
            return chart, f"{project_id}-trend.svg"

        return await _svg_file(render)

    return [trend, trend_file]


def audit_routes(queries: Queries) -> list[HTTPRouteHandler]:
    @get(
        "/ui/audit",
        summary="Dashboard: the audit trail, filtered and paginated, with exports",
        opt={"role": "auditor"},  # the same as the audit API
    )
    async def audit(request: Request) -> Response[str]:
        async def render() -> str:
            q = _params(request)
            as_of = p_date(q, "as_of")
            filters = {k: q.get(k) for k in audit_view.AUDIT_FILTERS if q.get(k)}
            if as_of:
                filters["to"] = audit_view.day_after(as_of)
            cursor = q.get("cursor")
            if q.get("from_position"):
                try:
                    cursor = encode_cursor([max(0, int(q["from_position"]) - 1)])
                except ValueError:
                    raise Rejected(
                        "invalid",
                        f"from_position must be a whole number, got {q['from_position']!r}",
                    ) from None
            result = await queries.audit(
                parse(AuditParams, {**filters, "cursor": cursor, "limit": 100})
            )
            return audit_view.audit_page(result.data, q, result.next_cursor, as_of)

        return await _page(render)

    return [audit]


def live_route(queries: Queries, closing: asyncio.Event) -> HTTPRouteHandler:
    @get("/ui/live", summary="Server-sent events: 'position' whenever the status read model moves")
    async def live(request: Request) -> Stream:
        return Stream(
            _positions(queries, closing),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return live


async def _positions(queries: Queries, closing: asyncio.Event) -> AsyncIterator[bytes]:
    """``position`` events while the status read model moves, a keep-alive comment every 15 s,
    until the service closes."""
    seen = queries.watcher.positions.get("status", 0)
    yield b"retry: 3000\n\n"
    closed = asyncio.ensure_future(closing.wait())
    try:
        while not closing.is_set():
            moved = asyncio.ensure_future(queries.watcher.wait("status", seen + 1, 15.0))
            await asyncio.wait({moved, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not moved.done():
                moved.cancel()
                return
            position, reached = moved.result()
            if reached:
                seen = position
                yield f"event: position\ndata: {position}\n\n".encode()
            else:
                yield b": keep-alive\n\n"
    finally:
        closed.cancel()


__all__ = ["dashboard_routes"]
