"""HTTP for MS Project (README "MS Project plans (MSPDI)"): a project's plan as MSPDI XML,
written from its events (``services.plans.export``), for a reader."""

from __future__ import annotations

import re
from dataclasses import dataclass

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

from events import ENCODER, Reply
from events.common import ID_PATTERN
from events.errors import Rejected, http_status
from services.plans import export
from services.query.openapi import error_response
from services.query.queries import Queries, project_events

MSPDI = "text/xml"  # RFC 7303: as application/xml; generated clients take text/* as text
ID = re.compile(ID_PATTERN)


@dataclass
class PlanOperation(Operation):
    def __post_init__(self) -> None:
        self.parameters = [
            Parameter(
                name="project_id",
                param_in="path",
                required=True,
                schema=Schema(type=OpenAPIType.STRING, pattern=ID_PATTERN),
            )
        ]
        xml = Schema(type=OpenAPIType.STRING, description="an MS Project XML (MSPDI) document")
        self.responses = {
            "200": OpenAPIResponse(
                description="the plan: phases, milestones, tasks, links, baselines",
                content={MSPDI: OpenAPIMediaType(schema=xml)},
            ),
            **{str(status): error_response(status) for status in (400, 401, 403, 404, 422)},
        }
        self.security = [{"bearer": []}]


def _refused(code: str, message: str) -> Response[bytes]:
    return Response(
        ENCODER.encode(Reply.fail(code, message)),
        status_code=http_status(code),
        media_type="application/json",
    )


def plan_routes(queries: Queries) -> list[HTTPRouteHandler]:
    @get(
        "/projects/{project_id:str}/plan.xml",
        operation_id="project_plan",
        opt={"role": "reader"},
        summary="A project's plan as MS Project XML (MSPDI)",
        description="Role: reader. Phases as summary tasks, milestones (current due dates; "
        "achieved ones with ActualFinish), their tasks, dependencies as finish-to-start links "
        "with the lag in elapsed days, baselines, and each id in the text field 'Milestones "
        "id'. A date outside MS Project's range (1984-2149) is refused (422, rejected).",
        operation_class=PlanOperation,
    )
    async def project_plan(request: Request) -> Response[bytes]:
        project_id = str(request.path_params["project_id"])
        try:
            if not ID.fullmatch(project_id):
                raise Rejected("invalid", f"project_id must match {ID_PATTERN}")
            body = export.mspdi(project_id, await project_events(queries.log, project_id))
        except Rejected as exc:
            return _refused(exc.code, exc.message)
        except export.ExportError as exc:
            return _refused("rejected", str(exc))
        disposition = f'attachment; filename="{project_id}-plan.xml"'
        return Response(body, media_type=MSPDI, headers={"content-disposition": disposition})

    return [project_plan]
