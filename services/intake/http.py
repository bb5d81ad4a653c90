"""HTTP POST /events: the same intake as NATS, for systems that only speak HTTP."""

from __future__ import annotations

from litestar import MediaType, Request, Response, post

from events import ENCODER, Reply
from events.errors import http_status
from services.auth.principal import Principal
from services.intake.http_docs import EventsOperation
from services.intake.service import IntakeService

JSON_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)


def intake_routes(intake: IntakeService) -> list:
    @post(
        "/events",
        summary="Report facts as CloudEvents (one object, or a JSON array)",
        status_code=202,
        opt={"role": "publisher"},
        operation_class=EventsOperation,
    )
    async def post_events(request: Request) -> Response[bytes]:
        # who sent it comes from the credential the edge checked, never from the message
        principal = request.scope.get("user")
        if not isinstance(principal, Principal):  # the edge always sets it; never guess
            reply = Reply.fail("unauthenticated", "send Authorization: Bearer <token>")
            return Response(ENCODER.encode(reply), status_code=401, media_type=MediaType.JSON)
        ctype = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        if ctype not in JSON_TYPES:
            reply = Reply.fail(
                "invalid",
                f"Content-Type {ctype!r} is not accepted: send application/cloudevents+json",
            )
            return Response(ENCODER.encode(reply), status_code=415, media_type=MediaType.JSON)
        body = await request.body()
        reply = await intake.handle(
            body,
            "http",
            correlation=request.headers.get("x-correlation-id"),
            principal=principal,
        )
        status = 202 if reply.error is None else http_status(reply.error.code)
        return Response(ENCODER.encode(reply), status_code=status, media_type=MediaType.JSON)

    return [post_events]
