"""HTTP for calendar clients (README "Calendar feeds"): a project's milestones as an RFC 5545
feed, and one feed across the projects a credential may read. Calendar clients send no headers,
so a feed credential's token may travel in the URL (``?token=``, checked at the edge,
``services.app.auth_http``); a reader's bearer token or dashboard session works too.

The milestones are judged as the status query judges them (``Queries.judged``), so a feed says
what the status says; ``services.query.calendar`` writes the VCALENDAR.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from litestar import MediaType, Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

from events import ENCODER, Reply
from events.common import ID_PATTERN
from events.errors import Rejected, http_status
from projections.status import queries as status_queries
from services.auth.principal import Principal
from services.query import calendar
from services.query.openapi import error_response
from services.query.queries import Queries

ICS = "text/calendar"  # Litestar adds "; charset=utf-8", as RFC 5545 wants
ID = re.compile(ID_PATTERN)
# a reader, or a feed token in the URL for its projects; the feed across projects reads only
# the credential's own projects when the URL names none
PROJECT_FEED = {"role": "reader", "feed": True}
ALL_FEED = {"role": "reader", "feed": True, "across_projects": True}
PAGE = 1000  # projects read a page at a time for the feed across projects


@dataclass(frozen=True)
class Feed:
    projects: list[calendar.FeedProject]
    name: str  # the calendar's name
    filename: str
    across: bool  # summaries name their project


# -- parameters (the query string is read here, so bad input answers the contract's error JSON) --
def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getall(name, [])
    if len(values) > 1:
        raise Rejected("invalid", f"{name} is given {len(values)} times: give it once")
    return values[0] if values and values[0] != "" else None


def _reminder(request: Request, takes: frozenset[str]) -> int | None:
    unknown = sorted(set(request.query_params) - takes - {"token"})
    if unknown:
        raise Rejected(
            "invalid",
            f"a calendar feed takes {', '.join(sorted(takes))}; {unknown[0]} is not one of them",
        )
    raw = _one(request, "reminder")
    if raw is None:
        return None
    most = calendar.MAX_REMINDER_DAYS
    if not raw.isascii() or not raw.isdigit() or int(raw) > most:
        raise Rejected(
            "invalid", f"reminder must be a whole number of days from 0 to {most}, got {raw!r}"
        )
    return int(raw)


def _checked_id(value: str, name: str = "project_id") -> str:
    if not ID.fullmatch(value):
        raise Rejected("invalid", f"{name} must match {ID_PATTERN}, got {value!r}")
    return value


def _named(request: Request) -> list[str] | None:
    """The ``project_id`` filter of the feed across projects (comma-separated or repeated)."""
    named = [
        p.strip()
        for value in request.query_params.getall("project_id", [])
        for p in value.split(",")
        if p.strip()
    ]
    return sorted({_checked_id(p) for p in named}) if named else None


# -- reading -------------------------------------------------------------------------------------
async def _projects(queries: Queries, only: list[str] | None, strict: bool) -> list[dict]:
    """Project rows: those in ``only`` (``strict``: each must exist), or every one."""
    if only is not None:
        found = []
        for project_id in only:
            rows = await status_queries.projects(queries.pool, only=project_id, limit=1)
            if not rows and strict:
                raise Rejected("not_found", f"project {project_id} is not known")
            found += rows
        return found
    every: list[dict] = []
    while True:
        after = every[-1]["project_id"] if every else ""
        page = await status_queries.projects(queries.pool, after=after, limit=PAGE)
        every += page
        if len(page) < PAGE:
            return every


async def feed_projects(
    queries: Queries, only: list[str] | None, strict: bool = True
) -> list[calendar.FeedProject]:
    projects = await _projects(queries, only, strict)
    rows = await status_queries.load(queries.pool, [p["project_id"] for p in projects])
    return [
        calendar.FeedProject(
            project_id=p["project_id"],
            name=p["name"] or p["project_id"],
            # judged together, exactly as the status query does (health needs predecessors)
            milestones=queries.judged(rows[p["project_id"]], p["target"]),
        )
        for p in projects
    ]


def _readable(principal: Principal, named: list[str] | None) -> tuple[list[str] | None, bool]:
    """What the feed across projects covers, and whether each must exist: the named ones (the
    edge checked them), else the credential's projects (one not created yet is left out), else
    (no project limit) every project (None)."""
    if named is not None:
        return named, True
    return (sorted(principal.projects) if principal.projects else None), False


# -- the answer -----------------------------------------------------------------------------------
def _json(body: object, status: int) -> Response[bytes]:
    return Response(ENCODER.encode(body), status_code=status, media_type=MediaType.JSON)


async def _answer(
    request: Request, queries: Queries, make: Callable[[int | None], Awaitable[Feed]]
) -> Response[bytes]:
    try:
        reminder = _reminder(request, frozenset(request.route_handler.opt.get("takes", ())))
        feed = await make(reminder)
    except Rejected as exc:
        return _json(Reply.fail(exc.code, exc.message), http_status(exc.code))
    body = calendar.calendar(
        feed.projects,
        name=feed.name,
        base_url=str(request.base_url),
        stamp=dt.datetime.now(dt.UTC).replace(microsecond=0),
        reminder_days=reminder,
        prefix_project=feed.across,
    )
    return Response(
        body,
        status_code=200,
        media_type=ICS,
        headers={
            "content-disposition": f'inline; filename="{feed.filename}"',
            "cache-control": "private, no-cache",
            "x-read-position": str(queries.watcher.positions.get("status", 0)),
        },
    )


# -- the OpenAPI operations -----------------------------------------------------------------------
REMINDER = Parameter(
    name="reminder",
    param_in="query",
    required=False,
    allow_empty_value=True,
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=calendar.MAX_REMINDER_DAYS),
    description="a reminder (VALARM) this many days before each open milestone's due day",
)
PROJECT_IN_PATH = Parameter(
    name="project_id",
    param_in="path",
    required=True,
    schema=Schema(type=OpenAPIType.STRING, pattern=ID_PATTERN),
)
PROJECTS_IN_QUERY = Parameter(
    name="project_id",
    param_in="query",
    required=False,
    allow_empty_value=True,
    schema=Schema(
        type=OpenAPIType.ARRAY,
        items=Schema(type=OpenAPIType.STRING, pattern=ID_PATTERN),
        unique_items=True,
    ),
    style="form",
    explode=False,
    description="only these projects (comma-separated; each must be one the credential reads)",
)


def _documented(parameters: list[Parameter]) -> type[Operation]:
    ics = Schema(type=OpenAPIType.STRING, description="an RFC 5545 VCALENDAR")
    responses = {
        "200": OpenAPIResponse(
            description="the calendar: one all-day VEVENT per milestone on its due date",
            content={"text/calendar": OpenAPIMediaType(schema=ics)},
        ),
        **{str(status): error_response(status) for status in (400, 401, 403, 404)},
    }

    @dataclass
    class CalendarOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = list(parameters)
            self.responses = dict(responses)
            self.security = [{"bearer": []}, {"feedToken": []}]

    return CalendarOperation


DESCRIBED = (
    "Role: reader, or a feed credential's token as ?token= (calendar clients send no headers). "
    "One all-day event per milestone on its due date: UID <milestone>.<project>@milestones "
    "(stable), SEQUENCE raised by each reschedule (and the cancellation), STATUS CONFIRMED or "
    "CANCELLED, the health and its reasons in DESCRIPTION and CATEGORIES, a link to the "
    "milestone's page in URL."
)


def calendar_routes(queries: Queries) -> list[HTTPRouteHandler]:
    @get(
        "/projects/{project_id:str}/milestones.ics",
        operation_id="project_calendar",
        opt={**PROJECT_FEED, "takes": ("reminder",)},
        summary="A project's milestones as a calendar feed (RFC 5545)",
        description=DESCRIBED,
        operation_class=_documented([PROJECT_IN_PATH, REMINDER]),
    )
    async def project_calendar(request: Request) -> Response[bytes]:
        project_id = str(request.path_params["project_id"])

        async def make(reminder: int | None) -> Feed:
            found = await feed_projects(queries, [_checked_id(project_id)])
            name = f"{found[0].name} milestones"
            return Feed(found, name, f"{project_id}-milestones.ics", across=False)

        return await _answer(request, queries, make)

    @get(
        "/calendar.ics",
        operation_id="calendar",
        opt={**ALL_FEED, "takes": ("reminder", "project_id")},
        summary="The milestones of every project the credential reads, as one calendar feed",
        description=DESCRIBED + " It covers every project the credential reads (a feed "
        "credential's: the projects it names), or those named by project_id; summaries start "
        "with the project's name.",
        operation_class=_documented([PROJECTS_IN_QUERY, REMINDER]),
    )
    async def every_calendar(request: Request) -> Response[bytes]:
        principal = cast(Principal, request.user)

        async def make(reminder: int | None) -> Feed:
            found = await feed_projects(queries, *_readable(principal, _named(request)))
            return Feed(found, "Milestones", "milestones.ics", across=True)

        return await _answer(request, queries, make)

    return [project_calendar, every_calendar]
