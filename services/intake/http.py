"""HTTP POST /events: the same intake as NATS, for systems that only speak HTTP.

The CloudEvents content mode comes from the request (HTTP binding §3): the ``Content-Type``
``application/cloudevents+json`` is one structured CloudEvent,
``application/cloudevents-batch+json`` a JSON array of them; a ``ce-specversion`` header makes
it binary (attributes in ``ce-*`` headers, the body is the data, ``Content-Type`` its media
type); a plain ``application/json`` body (or none named) is structured, one CloudEvent or an
array, as it always was.
"""

from __future__ import annotations

from litestar import MediaType, Request, Response, post

from events import ENCODER, Reply
from events.errors import Rejected, http_status
from services.auth.principal import Principal
from services.intake.binding import UnsupportedMedia, is_binary, to_structured
from services.intake.http_docs import EventsOperation
from services.intake.service import IntakeService

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON_TYPES = ("application/json", STRUCTURED, BATCH)
MODES_TEXT = (
    f"send {STRUCTURED} (one CloudEvent), {BATCH} (a JSON array of them), or binary mode: "
    "the attributes as ce-* headers, the data as a JSON body"
)


def _reply(reply: Reply, status: int) -> Response[bytes]:
    return Response(ENCODER.encode(reply), status_code=status, media_type=MediaType.JSON)


def structured_body(request: Request, body: bytes) -> bytes:
    """The request as one structured-mode body (a CloudEvent or a JSON array of them); raises
    ``Rejected`` (``UnsupportedMedia``: HTTP 415)."""
    given = request.headers.get("content-type")
    ctype = (given or "application/json").split(";")[0].strip().lower()
    if ctype.startswith("application/cloudevents"):  # a CloudEvents format: structured/batch
        if ctype not in (STRUCTURED, BATCH):
            raise UnsupportedMedia(f"event format {ctype!r} is not accepted: {MODES_TEXT}")
        if ctype == BATCH and body.lstrip()[:1] != b"[":
            raise Rejected(
                "invalid",
                f"{BATCH} carries a JSON array of CloudEvents: send an array, "
                f"or send one CloudEvent as {STRUCTURED}",
            )
        return body
    if is_binary(request.headers.keys()):
        return to_structured(
            request.headers.multi_items(), body, transport="http", content_type=given
        )
    if ctype not in JSON_TYPES:
        raise UnsupportedMedia(f"Content-Type {ctype!r} is not accepted: {MODES_TEXT}")
    return body


def intake_routes(intake: IntakeService) -> list:
    @post(
        "/events",
        summary="Report facts as CloudEvents: structured, batch or binary content mode",
        status_code=202,
        opt={"role": "publisher"},
        operation_class=EventsOperation,
    )
    async def post_events(request: Request) -> Response[bytes]:
        # who sent it comes from the credential the edge checked, never from the message
        principal = request.scope.get("user")
        if not isinstance(principal, Principal):  # the edge always sets it; never guess
            return _reply(Reply.fail("unauthenticated", "send Authorization: Bearer <token>"), 401)
        try:
            body = structured_body(request, await request.body())
        except UnsupportedMedia as exc:
            return _reply(Reply.fail(exc.code, exc.message), 415)
        except Rejected as exc:
            return _reply(Reply.fail(exc.code, exc.message), http_status(exc.code))
        reply = await intake.handle(
            body,
            "http",
            correlation=request.headers.get("x-correlation-id"),
            principal=principal,
        )
        return _reply(reply, 202 if reply.error is None else http_status(reply.error.code))

    return [post_events]
