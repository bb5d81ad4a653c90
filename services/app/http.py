"""The HTTP application (Litestar): the routes of the services this process runs, health,
metrics, OpenAPI, and the contract's error JSON for the framework's own errors."""

from __future__ import annotations

from litestar import Litestar, MediaType, Request, Response, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events import ENCODER, Reply
from services.intake.http import intake_routes
from services.intake.service import IntakeService


def _error(status: int, code: str, message: str) -> Response[bytes]:
    return Response(
        ENCODER.encode(Reply.fail(code, message)), status_code=status, media_type=MediaType.JSON
    )


def build_http_app(
    intake: IntakeService | None, *, max_body: int, extra_handlers: list | None = None
) -> Litestar:
    handlers: list = [health, metrics, *(extra_handlers or [])]

    if intake is not None:
        handlers += intake_routes(intake)

    def on_http_error(_: Request, exc: HTTPException) -> Response[bytes]:
        code = {404: "not_found", 405: "invalid", 413: "too_large"}.get(exc.status_code, "invalid")
        message = str(exc.detail)
        if exc.status_code == 413:
            message = f"request body is over {max_body} bytes: split it into smaller batches"
        elif isinstance(exc, ValidationException):
            message = validation_message(exc) or message
        return _error(exc.status_code, code, message)

    return Litestar(
        route_handlers=handlers,
        request_max_body_size=max_body,
        exception_handlers={HTTPException: on_http_error},
        openapi_config=OpenAPIConfig(title="Milestones", version="0.1.0", path="/schema"),
        logging_config=None,  # structlog owns logging (services.app.logs)
    )


def validation_message(exc: ValidationException) -> str:
    """Litestar's own checks (a handler's typed parameters) in one line naming each parameter;
    the query routes parse their parameters themselves and never get here."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    return "; ".join(
        f"{p.get('key') or p.get('source') or 'request'}: {p.get('message')}"
        for p in problems
        if isinstance(p, dict)
    )


@get("/health", media_type=MediaType.JSON, summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/metrics",
    media_type=CONTENT_TYPE_LATEST,
    summary="Prometheus metrics",
    include_in_schema=False,
)
async def metrics() -> bytes:
    return generate_latest()
