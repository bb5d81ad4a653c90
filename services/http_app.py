"""HTTP: POST /events (the intake, same path as NATS), health and metrics. Litestar."""

from __future__ import annotations

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events import ENCODER, Reply
from services.intake import HTTP_STATUS
from services.intake_service import IntakeService

_JSON_TYPES = ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")


def _error(status: int, code: str, message: str) -> Response[bytes]:
    return Response(ENCODER.encode(Reply.fail(code, message)), status_code=status, media_type=MediaType.JSON)


def build_http_app(intake: IntakeService | None, *, max_body: int, extra_handlers: list | None = None) -> Litestar:
    handlers: list = [health, metrics, *(extra_handlers or [])]

    if intake is not None:
        @post("/events", summary="Report facts as CloudEvents (one object, or a JSON array)", status_code=202)
        async def post_events(request: Request) -> Response[bytes]:
            ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if ctype not in _JSON_TYPES:
                return _error(415, "invalid", f"Content-Type {ctype!r} is not accepted: send application/cloudevents+json")
            body = await request.body()
            reply = await intake.handle(body, "http", correlation=request.headers.get("x-correlation-id"))
            status = 202 if reply.accepted else HTTP_STATUS.get(reply.error.code, 400)  # type: ignore[union-attr]
            return Response(ENCODER.encode(reply), status_code=status, media_type=MediaType.JSON)

        handlers.append(post_events)

    def on_http_error(_: Request, exc: HTTPException) -> Response[bytes]:
        code = {404: "not_found", 405: "invalid", 413: "too_large"}.get(exc.status_code, "invalid")
        message = str(exc.detail)
        if exc.status_code == 413:
            message = f"request body is over {max_body} bytes: split it into smaller batches"
        return _error(exc.status_code, code, message)

    return Litestar(
        route_handlers=handlers,
        request_max_body_size=max_body,
        exception_handlers={HTTPException: on_http_error},
        openapi_config=OpenAPIConfig(title="Milestones", version="0.1.0", path="/schema"),
        logging_config=None,  # structlog owns logging (services.logs)
    )


@get("/health", media_type=MediaType.JSON, summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/metrics", media_type=CONTENT_TYPE_LATEST, summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> bytes:
    return generate_latest()
