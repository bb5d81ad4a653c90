"""Every query, declared once: its NATS name, parameters, handler, HTTP route, role, answer,
formats and CLI shape. ``http_routes``, ``nats_handlers`` and ``services.cli.read`` are built from
``QUERIES``; a new query is one entry here (with its parameters and handler) and its test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from events.subjects import query_subject
from projections.audit import COLUMNS as AUDIT_COLUMNS
from services.query import answers as a
from services.query import requests as q
from services.query import text
from services.query.params import One, Page, Params, parse
from services.query.queries import Queries
from services.query.spreadsheets import (
    MILESTONE_COLUMNS,
    REPORT_COLUMNS,
    milestones_export,
    report_export,
)

P = TypeVar("P", bound=Params)
Role = Literal["reader", "auditor", "admin"]
Format = Literal["json", "jsonl", "csv"]
Exported = tuple[int, bool, AsyncIterator[Mapping[str, Any]]]  # position, stale, rows

# the project is the command's argument; kind, phase and the rest are in --json
STATUS_COLUMNS = (
    "milestone_id",
    "name",
    "due",
    "forecast",
    "float_days",
    "progress",
    "health",
    "health_reasons",
)

PROJECT_COLUMNS = (
    "project_id",
    "name",
    "milestones",
    "by_health",
    "next",
    "expected_finish",
    "goals",
)
PROJECT_CELLS = {"by_health": text.health_counts, "next": text.next_milestone}


@dataclass(frozen=True, kw_only=True)
class Cli:
    """How the CLI offers a query. Queries sharing a ``command`` are one subcommand: the one
    without ``when`` is its default, another answers when its ``when`` argument is given (a
    parameter, or a switch such as ``--preview``; ``help`` then describes that argument)."""

    command: str
    help: str
    args: tuple[str, ...] = ()  # parameters taken as positional arguments, in order
    flags: Mapping[str, str] = field(default_factory=dict)  # parameter -> flag, where not derived
    columns: tuple[str, ...] = ()
    cells: Mapping[str, text.Cell] = field(default_factory=dict)  # computed columns
    render: Callable[[Any], str] | None = None  # the answer's data as text, instead of a table
    when: str | None = None


@dataclass(frozen=True, kw_only=True)
class Query(Generic[P]):
    name: str  # NATS milestones.query.<name>, the HTTP operation id
    params: type[P]
    handler: Callable[[Queries, P], Awaitable[Any]]
    method: Literal["GET", "POST"]
    path: str  # {name} segments are parameters of ``params``
    role: Role  # who may call it: the edges refuse others (HTTP 403, NATS ``forbidden``)
    response: Any  # the JSON answer's envelope: One, Page, or list (a bare array)
    summary: str
    formats: tuple[Format, ...] = ("json",)
    export: Callable[[Queries, P], Awaitable[Exported]] | None = None  # every match, streamed
    export_columns: tuple[str, ...] = ()  # CSV columns of ``export``
    # Parameters only a NATS request reads: the HTTP route drops them unread (clients of the
    # route before the registry sent them and got its plain answer) and the CLI does not offer
    # them.
    nats_only: tuple[str, ...] = ()
    cli: Cli | None = None
    # The answer's ``data`` (One) or each of its items (Page, list), for the OpenAPI document
    # (``services.query.answers``); a tuple: one of these types. None: any JSON.
    item: Any = None
    # HTTP statuses the query itself may answer besides 400 (invalid), 401 and 403 (the edge)
    errors: tuple[int, ...] = ()

    @property
    def subject(self) -> str:
        return query_subject(self.name)

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))

    def role_for(self, raw: Mapping[str, Any]) -> Role:
        """The role this call needs: a parameter that changes state (the digest's ``send`` and
        ``record``) asks for admin whatever the query's own role."""
        changes_state = any(raw.get(p) not in (None, False, "false", "0") for p in self.nats_only)
        return "admin" if changes_state else self.role

    async def answer(self, queries: Queries, raw: Mapping[str, Any]) -> Any:
        """Parse ``raw`` (query string and path, or a JSON object) and run the query."""
        return await self.handler(queries, parse(self.params, raw))


QUERIES: tuple[Query[Any], ...] = (
    Query(
        name="milestones",
        params=q.MilestonesParams,
        handler=Queries.project_milestones,
        method="GET",
        path="/projects/{project_id}/milestones",
        role="reader",
        response=Page,
        item=a.Milestone,
        errors=(404,),
        summary="A project's milestones with health, filtered, sorted and paged; "
        "format=csv: every match, a spreadsheet",
        formats=("json", "csv"),
        export=milestones_export,
        export_columns=MILESTONE_COLUMNS,
        cli=Cli(
            command="status",
            help="milestone status: a project's milestones, or one milestone",
            args=("project_id",),
            columns=STATUS_COLUMNS,
        ),
    ),
    Query(
        name="milestone",
        params=q.MilestoneParams,
        handler=Queries.milestone,
        method="GET",
        path="/milestones/{milestone_id}",
        role="reader",
        response=One,
        item=a.Milestone,
        errors=(
            404,
            409,
        ),
        summary="A milestone's status (project_id disambiguates)",
        cli=Cli(
            command="status",
            help="this milestone only",
            args=("project_id", "milestone_id"),
            columns=STATUS_COLUMNS,
            when="milestone_id",
        ),
    ),
    Query(
        name="history",
        params=q.HistoryParams,
        handler=Queries.history,
        method="GET",
        path="/milestones/{milestone_id}/history",
        role="reader",
        response=Page,
        item=a.HistoryEntry,
        errors=(404,),
        summary="Schedule history of a milestone, in time order (occurred_at, then position)",
        cli=Cli(
            command="history",
            help="a milestone's schedule history, in the order it happened",
            args=("milestone_id",),
            columns=(
                "position",
                "occurred_at",
                "type",
                "old_due",
                "new_due",
                "reason",
                "actor",
                "source",
            ),
        ),
    ),
    Query(
        name="audit",
        params=q.AuditParams,
        handler=Queries.audit,
        method="GET",
        path="/audit",
        role="auditor",
        response=Page,
        item=a.AuditEvent,
        summary="Audit trail: every event with who, where from, when and why; "
        "format=jsonl|csv streams every match",
        formats=("json", "jsonl", "csv"),
        export=Queries.audit_export,
        export_columns=AUDIT_COLUMNS,
        cli=Cli(
            command="audit",
            help="the audit trail",
            flags={"from": "--since", "to": "--until"},
            columns=(
                "position",
                "occurred_at",
                "type",
                "project_id",
                "milestone_id",
                "actor",
                "principal",
                "source",
            ),
        ),
    ),
    Query(
        name="report",
        params=q.ReportParams,
        handler=Queries.report,
        method="GET",
        path="/projects/{project_id}/report",
        role="reader",
        response=One,
        item=(a.Report, a.ReportComparison),
        errors=(404,),
        summary="Planned vs actual: per milestone reference (baseline), expected finish "
        "and health (as the status defines them), slip, reschedules, on time; on-time rate, "
        "mean and worst slip, schedule variance. "
        "as_of or position: as the project stood then; compare_as_of or compare_position; "
        "format=csv: the milestone lines (compared: now's), a spreadsheet",
        formats=("json", "csv"),
        export=report_export,
        export_columns=REPORT_COLUMNS,
        cli=Cli(
            command="report",
            help="planned vs actual for a project (time travel with --as-of/--position)",
            args=("project_id",),
            render=text.report,
        ),
    ),
    Query(
        name="trend",
        params=q.TrendParams,
        handler=Queries.trend,
        method="GET",
        path="/projects/{project_id}/trend",
        role="reader",
        response=One,
        item=a.Trend,
        errors=(404,),
        summary="Milestone trend analysis: each milestone's expected finish at every report date "
        "(status reports, reschedules, weekly cut-offs)",
        cli=Cli(
            command="trend",
            help="milestone trend analysis: expected finish per milestone at each report date",
            args=("project_id",),
            render=text.trend,
        ),
    ),
    Query(
        name="critical_path",
        params=q.ProjectParams,
        handler=Queries.critical_path,
        method="GET",
        path="/projects/{project_id}/critical-path",
        role="reader",
        response=One,
        item=a.ProjectCriticalPath,
        errors=(404,),
        summary="The critical path: the chain that drives the project's finish, and each "
        "milestone's float in days (negative: the finish can no longer be met)",
        cli=Cli(
            command="critical-path",
            help="the chain that drives a project's finish, and each milestone's float",
            args=("project_id",),
            render=text.critical_path,
        ),
    ),
    Query(
        name="digest_send",
        params=q.DigestSendParams,
        handler=Queries.digest_send,
        method="POST",
        path="/projects/{project_id}/digest",
        role="admin",
        response=One,
        item=a.DigestMade,
        errors=(404,),
        summary="Build the digest now, record it and queue it for the project's subscribers",
        cli=Cli(
            command="digest",
            help="the project digest: every milestone's health, what changed since the last "
            "digest; recorded and sent to the project's subscribers (--preview: only show it)",
            args=("project_id",),
            render=text.digest_sent,
        ),
    ),
    Query(
        name="digest",
        params=q.DigestParams,
        handler=Queries.digest,
        method="GET",
        path="/projects/{project_id}/digest",
        role="reader",
        response=One,
        item=a.DigestMade,
        errors=(404,),
        summary="Preview of the project digest: every milestone's health and what changed "
        "since the last digest (nothing is recorded or sent; POST sends it)",
        # over NATS, as before the registry: send is digest_send, record keeps it unsent. They
        # change state, so role enforcement must ask for admin when either is set.
        nats_only=("record", "send"),
        cli=Cli(
            command="digest",
            help="show it without recording or sending it",
            args=("project_id",),
            render=text.digest_preview,
            when="--preview",
        ),
    ),
    Query(
        name="deliveries",
        params=q.DeliveriesParams,
        handler=Queries.deliveries,
        method="GET",
        path="/deliveries",
        role="admin",  # operators' data: webhook URLs and failures
        response=Page,
        item=a.Delivery,
        summary="Webhook delivery log, oldest first, each delivery with its attempts",
        cli=Cli(
            command="deliveries",
            help="the webhook delivery log (every notification and its attempts)",
            columns=(
                "id",
                "kind",
                "project_id",
                "milestone_id",
                "stakeholder",
                "status",
                "attempts",
                "last",
                "created_at",
                "delivered_at",
            ),
            cells={"last": text.last_response},
        ),
    ),
    Query(
        name="retry_delivery",
        params=q.RetryDeliveryParams,
        handler=Queries.retry_delivery,
        method="POST",
        path="/deliveries/{id}/retry",
        role="admin",
        response=One,
        item=a.Retried,
        errors=(
            404,
            409,
        ),
        summary="Send a failed delivery again now",
        cli=Cli(
            command="deliveries",
            help="send this failed delivery again now",
            flags={"id": "--retry"},
            columns=("id", "status"),
            when="id",
        ),
    ),
    Query(
        name="projects",
        params=q.ProjectsParams,
        handler=Queries.projects,
        method="GET",
        path="/projects",
        role="reader",
        response=Page,
        item=a.Project,
        errors=(404,),
        summary="Every project (project_id: that one, or not_found): goals, milestones by "
        "health, next milestone, expected finish",
        cli=Cli(
            command="projects",
            help="every project: goals, milestones by health, next milestone, expected finish",
            args=("project_id",),  # `projects PROJECT` prints the page of that one, as before
            columns=PROJECT_COLUMNS,
            cells=PROJECT_CELLS,
        ),
    ),
    Query(
        name="project",
        params=q.ProjectParams,
        handler=Queries.project,
        method="GET",
        path="/projects/{project_id}",
        role="reader",
        response=One,
        item=a.Project,
        errors=(404,),
        summary="One project: goals, milestones by health, next milestone, expected finish",
        # no CLI shape: `milestones projects PROJECT` asks `projects` with project_id
    ),
    Query(
        name="subscriptions",
        params=q.SubscriptionsParams,
        handler=Queries.subscriptions,
        method="GET",
        path="/projects/{project_id}/subscriptions",
        role="reader",
        response=Page,
        item=a.Subscription,
        summary="Stakeholders' webhooks for a project (secrets are never shown, only signed)",
        cli=Cli(
            command="subscriptions",
            help="who is told about a project (webhooks; secrets never shown)",
            args=("project_id",),
            columns=("stakeholder", "milestone_id", "url", "signed", "subscribed_at"),
        ),
    ),
    Query(
        name="status_reports",
        params=q.StatusReportsParams,
        handler=Queries.status_reports,
        method="GET",
        path="/projects/{project_id}/status-reports",
        role="reader",
        response=Page,
        item=a.StatusReport,
        summary="Status updates people posted (StatusReported), newest first",
        cli=Cli(
            command="reports",
            help="status updates people posted for a project (StatusReported)",
            args=("project_id",),
            columns=("position", "reported_at", "milestone_id", "health", "note", "actor"),
        ),
    ),
    Query(
        name="rejections",
        params=q.RejectionsParams,
        handler=Queries.rejections,
        method="GET",
        path="/rejections",
        role="auditor",  # refused messages are shown whole, as they arrived
        response=Page,
        item=a.Rejection,
        summary="Inbox messages the intake refused, with the reason",
        # no CLI shape: `milestones rejections` reads the rejections stream itself
    ),
    Query(
        name="projections",
        params=q.ProjectionsParams,
        handler=Queries.projections,
        method="GET",
        path="/projections",
        role="reader",
        response=list,
        item=a.ProjectionState,
        summary="Each projection's position, lag, rate and parked count",
        cli=Cli(
            command="projections",
            help="each projection's position, lag, rate and parked count",
            columns=("projection", "position", "lag", "rate", "parked", "updated_at"),
            cells={"lag": text.lag, "rate": text.rate},
        ),
    ),
    Query(
        name="parked",
        params=q.ParkedParams,
        handler=Queries.parked,
        method="GET",
        path="/parked",
        role="admin",  # raw payloads (secrets redacted when shown); `replay-parked` acts on them
        response=list,
        item=a.ParkedEvent,
        summary="Events a projection could not apply (at most 1000)",
        cli=Cli(
            command="parked",
            help="events a projection could not apply",
            args=("projection",),
            columns=("projection", "position", "subject", "type", "attempts", "error"),
        ),
    ),
)

BY_NAME: dict[str, Query[Any]] = {query.name: query for query in QUERIES}
