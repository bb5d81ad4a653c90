"""``POST /projects/{id}/import`` (an admin's): an MS Project plan (MSPDI XML as the body) into a
project, through the intake in process, as the principal that sent it. The same pure core as
``milestones import`` (``services.plans``); the project's state comes from its log here, so
tasks and dependencies already there are not sent again either."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType

from events import ENCODER, Reply
from events.common import ID_PATTERN
from events.errors import Rejected, http_status
from services.auth.principal import Principal
from services.intake.service import IntakeService
from services.plans import current, mspdi
from services.plans.cloudevents import batches, cloudevent
from services.plans.mapping import KIND_ALIAS, Current, import_plan
from services.query.openapi import error_response
from services.query.queries import Queries, project_events

SOURCE = "milestones-plan-import"
TRUE = ("1", "true", "yes")


def _flag(name: str, description: str) -> Parameter:
    return Parameter(
        name=name,
        param_in="query",
        required=False,
        schema=Schema(type=OpenAPIType.BOOLEAN),
        description=description,
    )


@dataclass
class ImportOperation(Operation):
    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING)
        self.parameters = [
            Parameter(
                name="project_id",
                param_in="path",
                required=True,
                schema=Schema(type=OpenAPIType.STRING, pattern=ID_PATTERN),
            ),
            _flag("dry_run", "answer what would be sent, send nothing"),
            _flag("cancel_removed", "cancel open milestones the plan no longer has"),
            Parameter(
                name="source",
                param_in="query",
                required=False,
                schema=text,
                description=f"the CloudEvent source (default {SOURCE}): the credential's own",
            ),
            Parameter(
                name="kind_field",
                param_in="query",
                required=False,
                schema=text,
                description=f"the custom field holding a milestone's kind (default {KIND_ALIAS})",
            ),
        ]
        self.request_body = RequestBody(
            content={"text/xml": OpenAPIMediaType(schema=text)},
            description="an MS Project XML (MSPDI) plan",
            required=True,
        )
        answer = Schema(
            type=OpenAPIType.OBJECT,
            description="accepted, sent (CloudEvents), warnings, removed (milestones the plan "
            "no longer has), events (the references the intake answered), dry_run",
        )
        self.responses = {
            "200": OpenAPIResponse(
                description="imported (or, with dry_run, what would be sent)",
                content={"application/json": OpenAPIMediaType(schema=answer)},
            ),
            **{str(s): error_response(s) for s in (400, 401, 403, 404, 409, 413, 422)},
        }
        self.security = [{"bearer": []}]


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(body), status_code=status, media_type="application/json")


def _refused(code: str, message: str) -> Response[bytes]:
    return _json(Reply.fail(code, message), http_status(code))


def plan_import_routes(queries: Queries, intake: IntakeService) -> list[HTTPRouteHandler]:
    @post(
        "/projects/{project_id:str}/import",
        operation_id="import_plan",
        status_code=200,
        opt={"role": "admin"},
        summary="Import an MS Project XML (MSPDI) plan into a project",
        description="Role: admin. The events are published as the admin's credential, with a "
        "publisher's rights for the sources it names: the CloudEvent source (default "
        f"{SOURCE}) must be one of them. Sends only what the project does not hold yet "
        "(README 'MS Project plans'). The body is limited like every request (256 KiB): "
        "larger plans go through `milestones import`.",
        operation_class=ImportOperation,
    )
    async def import_project_plan(request: Request) -> Response[bytes]:
        principal = request.scope.get("user")
        if not isinstance(principal, Principal):
            return _refused("unauthenticated", "send Authorization: Bearer <token>")
        project_id = str(request.path_params["project_id"])
        params = request.query_params
        source = params.get("source") or SOURCE
        now = dt.datetime.now(dt.UTC)
        try:
            plan = mspdi.parse(await request.body())
            try:
                state = current.from_events(await project_events(queries.log, project_id))
            except Rejected as exc:
                if exc.code != "not_found":
                    raise
                state = Current()
            result = import_plan(
                plan,
                project_id,
                state,
                now,
                kind_alias=params.get("kind_field") or KIND_ALIAS,
                cancel_removed=params.get("cancel_removed", "").lower() in TRUE,
            )
        except mspdi.PlanError as exc:
            return _refused("invalid", str(exc))
        except Rejected as exc:
            return _refused(exc.code, exc.message)
        events = [cloudevent(o, source, now) for o in result.events]
        answer: dict[str, Any] = {
            "accepted": True,
            "sent": 0,
            "warnings": result.warnings,
            "removed": result.removed,
        }
        if params.get("dry_run", "").lower() in TRUE:
            return _json({**answer, "dry_run": True, "cloudevents": events})
        # An admin imports; the events are published as that principal (its id is stored with
        # each), with a publisher's rights for the sources (and projects) its credential names.
        publishing = dataclasses.replace(principal, role="publisher")
        refs: list[Any] = []
        limits = intake.limits
        for count, body in batches(events, limits.max_batch, limits.max_bytes):
            reply = await intake.handle(body, "http", principal=publishing)
            if reply.error is not None:
                message = f"{reply.error.message} ({answer['sent']} event(s) before were accepted)"
                return _refused(reply.error.code, message)
            refs += reply.events or []
            answer["sent"] += count
        return _json({**answer, "events": refs})

    return [import_project_plan]
