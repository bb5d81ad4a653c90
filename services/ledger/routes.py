"""HTTP for auditors: verify the live log, proofs, checkpoints, the export, and the log's public
key. Each handler names the role it needs in ``opt["role"]`` (checked by the HTTP auth)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.response import Stream

from events import ENCODER, Reply
from events.errors import Rejected, http_status
from services.ledger.view import LedgerView

AUDITOR = {"role": "auditor"}
READER = {"role": "reader"}
KEY_PATH = "/.well-known/milestones/log-key"


# -- the OpenAPI operations (the handlers read their query strings themselves) --------------------
ERROR = Reference("#/components/schemas/Error")  # added to the document by services.app
REFUSALS = {
    400: "invalid: a parameter is missing or out of range (the message says which)",
    401: "unauthenticated: no credential, or one that is unknown, revoked or expired",
    403: "forbidden: this route needs the auditor role",
    404: "not_found: no signed checkpoint of that size, or none covers the position yet",
}


def _whole(name: str, least: int, required: bool = False, most: int | None = None) -> Parameter:
    return Parameter(
        name=name,
        param_in="query",
        required=required,
        allow_empty_value=not required,  # ?size= is the default, as if absent
        schema=Schema(type=OpenAPIType.INTEGER, minimum=least, maximum=most),
    )


def _documented(
    parameters: list[Parameter],
    statuses: tuple[int, ...],
    media_type: str = "application/json",
    role: str = "auditor",
) -> type[Operation]:
    json = media_type == "application/json"
    answer = Schema(type=OpenAPIType.OBJECT if json else OpenAPIType.STRING)
    responses = {
        "200": OpenAPIResponse(
            description="the answer", content={media_type: OpenAPIMediaType(schema=answer)}
        ),
        **{
            str(status): OpenAPIResponse(
                description=REFUSALS[status].replace("auditor", role),
                content={"application/json": OpenAPIMediaType(schema=ERROR)},
            )
            for status in statuses
        },
    }

    @dataclass
    class LedgerOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = list(parameters)
            self.responses = dict(responses)

    return LedgerOperation


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(body), status_code=status, media_type=MediaType.JSON)


def _int(request: Request, name: str, *, default: int | None = None, least: int = 1) -> int | None:
    values = request.query_params.getall(name, [])
    if len(values) > 1:  # as the query routes answer (services/query/params.py)
        raise Rejected("invalid", f"{name} is given {len(values)} times: give it once")
    raw = values[0] if values else None
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Rejected("invalid", f"{name} must be a whole number, got {raw!r}") from None
    if value < least:
        raise Rejected("invalid", f"{name} must be at least {least}, got {value}")
    return value


async def _answer(make: Callable[[], Awaitable[Any]]) -> Response[bytes]:
    try:
        return _json(await make())
    except Rejected as exc:
        return _json(Reply.fail(exc.code, exc.message), http_status(exc.code))


def ledger_routes(view: LedgerView) -> list[HTTPRouteHandler]:
    @get(
        "/audit/verify",
        operation_id="audit_verify",
        opt=AUDITOR,
        summary="Recompute the Merkle tree from the log and check every signed checkpoint",
        description="Role: auditor. ok=false names the first position that differs from what "
        "the checkpoints commit to (first_bad_position).",
        operation_class=_documented([], (401, 403)),
    )
    async def audit_verify() -> Response[bytes]:
        return _json(await view.verify_live())

    @get(
        "/audit/proof",
        operation_id="audit_proof",
        opt=AUDITOR,
        summary="Inclusion proof of the event at a position (RFC 6962 audit path)",
        description="Role: auditor. position=N (1-based stream position), size=S: a signed "
        "checkpoint's tree size (default: the latest).",
        operation_class=_documented(
            [_whole("position", 1, required=True), _whole("size", 1)], (400, 401, 403, 404)
        ),
    )
    async def audit_proof(request: Request) -> Response[bytes]:
        async def make() -> Any:
            position = _int(request, "position")
            if position is None:
                raise Rejected("invalid", "position is required: ?position=N (1 is the first)")
            return await view.inclusion(position, _int(request, "size"))

        return await _answer(make)

    @get(
        "/audit/consistency",
        operation_id="audit_consistency",
        opt=AUDITOR,
        summary="Consistency proof between two tree sizes (RFC 6962 §2.1.2)",
        description="Role: auditor. from=M (the size of a checkpoint you hold), to=N (a signed "
        "checkpoint's size, default the latest).",
        operation_class=_documented(
            [_whole("from", 1, required=True), _whole("to", 1)], (400, 401, 403, 404)
        ),
    )
    async def audit_consistency(request: Request) -> Response[bytes]:
        async def make() -> Any:
            old = _int(request, "from")
            if old is None:
                raise Rejected("invalid", "from is required: ?from=M (a tree size you hold)")
            return await view.consistency(old, _int(request, "to"))

        return await _answer(make)

    @get(
        "/audit/checkpoints",
        operation_id="audit_checkpoints",
        opt=AUDITOR,
        summary="Signed checkpoints: the latest, and a page of them by size",
        description="Role: auditor. after=SIZE (default 0), limit (default 100, at most 1000).",
        operation_class=_documented(
            [_whole("after", 0), _whole("limit", 1, most=1000)], (400, 401, 403)
        ),
    )
    async def audit_checkpoints(request: Request) -> Response[bytes]:
        async def make() -> Any:
            after = _int(request, "after", default=0, least=0) or 0
            limit = _int(request, "limit", default=100) or 100
            if limit > 1000:
                raise Rejected("invalid", f"limit must be at most 1000, got {limit}")
            return await view.checkpoints(after, limit)

        return await _answer(make)

    @get(
        "/audit/export",
        operation_id="audit_export",
        opt=AUDITOR,
        summary="The log in its stored bytes, its signed checkpoints and the public key "
        "(JSON Lines) for offline `milestones audit verify --file`",
        description="Role: auditor.",
        operation_class=_documented([], (401, 403), "application/x-ndjson"),
    )
    async def audit_export() -> Stream:
        return Stream(
            view.export(),
            media_type="application/x-ndjson",
            headers={"content-disposition": 'attachment; filename="milestones-audit.jsonl"'},
        )

    @get(
        KEY_PATH,
        operation_id="log_key",
        opt=READER,
        summary="The log's public key (Ed25519) that signs its checkpoints",
        description="Role: reader. PEM, raw base64, key id, origin, and the signed-note "
        "verifier key (vkey).",
        operation_class=_documented([], (401, 403), role="reader"),
    )
    async def log_key() -> Response[bytes]:
        return _json(view.public_key())

    return [audit_verify, audit_proof, audit_consistency, audit_checkpoints, audit_export, log_key]
