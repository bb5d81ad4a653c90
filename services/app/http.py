"""The HTTP application (Litestar): the routes of the services this process runs, health,
readiness, metrics, OpenAPI, the contract's error JSON for the framework's own errors, and the
credential check in front of every route but ``/health`` and ``/ready``
(``services.app.auth_http``). ``build_ops_app``: the same three operational routes alone, for
the ops port every process serves."""

from __future__ import annotations

from litestar import Litestar, MediaType, Request, Response, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.router import Router
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events import ENCODER, Reply
from services.app.auth_http import AuthMiddleware, Sessions, login_routes
from services.app.openapi_doc import HEALTH, READY, openapi_config, public_operation
from services.app.readiness import Readiness
from services.auth.principal import Authenticator
from services.dashboard.sign_off import sign_off_form_routes
from services.intake.approvals import approval_routes
from services.intake.http import intake_routes
from services.intake.service import IntakeService


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        ENCODER.encode(Reply.fail(code, message)),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def build_http_app(
    intake: IntakeService | None,
    *,
    max_body: int,
    authenticator: Authenticator,
    extra_handlers: list | None = None,
    sessions: Sessions | None = None,
) -> Litestar:
    """``sessions``: the dashboard's sign-in table (a fresh one when not given)."""
    sessions = sessions or Sessions(authenticator)
    handlers: list = [
        health,
        metrics,
        *login_routes(sessions, authenticator),
        *(extra_handlers or []),
    ]

    if intake is not None:
        handlers += intake_routes(intake) + approval_routes(intake)
        handlers += sign_off_form_routes(intake)  # the dashboard's form: a page under /ui
    # the dashboard's pages are for browsers, not API clients: kept out of the API document
    pages = [h for h in handlers if _is_page(h)]
    handlers = [h for h in handlers if not _is_page(h)]
    if pages:
        handlers.append(Router("/", route_handlers=pages, include_in_schema=False))

    return Litestar(
        route_handlers=handlers,
        request_max_body_size=max_body,
        exception_handlers={HTTPException: _on_http_error(max_body)},
        middleware=[
            DefineMiddleware(AuthMiddleware, authenticator=authenticator, sessions=sessions)
        ],
        openapi_config=openapi_config(),
        logging_config=None,  # structlog owns logging (services.app.logs)
    )


def _is_page(handler: object) -> bool:
    paths = getattr(handler, "paths", ())
    return bool(paths) and all(p == "/ui" or p.startswith("/ui/") for p in paths)


def build_ops_app(readiness: Readiness, *, authenticator: Authenticator) -> Litestar:
    """``/health``, ``/ready`` and ``/metrics`` alone (the ops port): no credential for the first
    two, a reader's bearer token for ``/metrics`` as on the API port."""
    return Litestar(
        route_handlers=[health, metrics, ready_route(readiness)],
        request_max_body_size=1024,
        exception_handlers={HTTPException: _on_http_error(1024)},
        middleware=[
            DefineMiddleware(
                AuthMiddleware, authenticator=authenticator, sessions=Sessions(authenticator)
            )
        ],
        openapi_config=None,
        logging_config=None,
    )


def _on_http_error(max_body: int):
    def on_http_error(_: Request, exc: HTTPException) -> Response[bytes]:
        code = {404: "not_found", 405: "invalid", 413: "too_large"}.get(exc.status_code, "invalid")
        message = str(exc.detail)
        if exc.status_code == 413:
            message = f"request body is over {max_body} bytes: split it into smaller batches"
        elif isinstance(exc, ValidationException):
            message = validation_message(exc) or message
        # a 405 says which methods the path has (RFC 9110 requires Allow)
        allow = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return _error(exc.status_code, code, message, allow)

    return on_http_error


def validation_message(exc: ValidationException) -> str:
    """Litestar's own checks (a handler's typed parameters) in one line naming each parameter;
    the query routes parse their parameters themselves and never get here."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    return "; ".join(
        f"{p.get('key') or p.get('source') or 'request'}: {p.get('message')}"
        for p in problems
        if isinstance(p, dict)
    )


@get(
    "/health",
    media_type=MediaType.JSON,
    summary="Liveness (no credential needed)",
    description="Answers while the process's event loop does: nothing else is checked.",
    opt={"public": True},
    operation_class=public_operation("health", HEALTH, {200: "the process answers"}),
)
async def health() -> dict[str, str]:
    return {"status": "ok"}


def ready_route(readiness: Readiness) -> HTTPRouteHandler:
    @get(
        "/ready",
        media_type=MediaType.JSON,
        summary="Readiness (no credential needed)",
        description='200 `{"ready": true, "checks": {...}}` when NATS is connected, the '
        "database answers (where the process uses one) and every projection runner and "
        "supervised task runs and makes progress; 503 with the same shape otherwise, each "
        'check `{"ok", "detail"}` saying what fails and why.',
        opt={"public": True},
        operation_class=public_operation(
            "ready", READY, {200: "ready", 503: "not ready: see checks"}
        ),
    )
    async def ready() -> Response[bytes]:
        ok, checks = await readiness.check()
        return Response(
            ENCODER.encode({"ready": ok, "checks": checks}),
            status_code=200 if ok else 503,
            media_type=MediaType.JSON,
        )

    return ready


@get(
    "/metrics",
    media_type=CONTENT_TYPE_LATEST,
    summary="Prometheus metrics",
    include_in_schema=False,
    opt={"role": "reader"},  # scrapers send a reader's bearer token
)
async def metrics() -> bytes:
    return generate_latest()
