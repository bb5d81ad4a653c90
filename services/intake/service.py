"""The intake as a service: one object that every entry point calls, plus inbox rejections."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import time

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram

from events import ENCODER, Rejection, Reply
from events.bounds import json_too_deep
from events.subjects import INBOX_PREFIX, REJECTIONS_STREAM, rejection_subject, type_token
from services.auth.principal import (
    NOBODY,
    SERVICE,
    UNKNOWN_CREDENTIAL,
    Authenticator,
    Principal,
    from_subject,
)
from services.intake.committer import Committer
from services.intake.observe import CALL, Call, peek
from services.intake.parse import Limits, handle
from services.intake.webhooks import STRICT, Webhooks
from services.notify.redact import redact_bytes, redact_json_text

log = structlog.get_logger("milestones.intake")
_bind = structlog.contextvars.bind_contextvars
_reset = structlog.contextvars.reset_contextvars

MESSAGES = Counter(
    "milestones_intake_messages_total", "Messages handled by the intake", ["path", "outcome"]
)
LATENCY = Histogram("milestones_intake_seconds", "Time from receipt to verdict", ["path"])


@functools.cache
def _accepted(path: str) -> Counter:
    """The accepted counter of a path (``labels`` takes a lock and a lookup per call)."""
    return MESSAGES.labels(path, "accepted")


@functools.cache
def _latency(path: str) -> Histogram:
    return LATENCY.labels(path)


class IntakeService:
    def __init__(
        self,
        nc: NATS,
        committer: Committer,
        limits: Limits,
        auth: Authenticator | None = None,
        *,
        webhooks: Webhooks = STRICT,
    ) -> None:
        self.auth = auth  # who sent an inbox message (its subject); None: only the services can
        self.nc = nc
        self.js = nc.jetstream()
        self.committer = committer
        self.limits = limits
        self.webhooks = webhooks  # subscriptions: the target policy, the key sealing secrets

    async def handle(
        self,
        body: bytes,
        path: str,
        expected_type: str | None = None,
        correlation: str | None = None,
        principal: Principal = SERVICE,
        *,
        sign_off: bool = False,
    ) -> Reply:
        started = time.perf_counter()
        call = Call(path, expected_type)
        token = CALL.set(call)  # the committer names the CloudEvents in it (log fields, spans)
        # the log fields of this message for everything logged in its task (``bind`` and
        # ``reset`` rather than ``bound_contextvars``: that one copies and scans the whole
        # context on the way in, ~8 % of the intake's CPU under load; the effect is the same)
        bound = _bind(path=path, correlation_id=correlation, principal=principal.id)
        try:
            reply = await handle(
                body,
                self.committer,
                self.limits,
                principal,
                expected_type,
                webhooks=self.webhooks,
                # a reply a sender reads (the demo and the inbox have none)
                answered=path in ("http", "commands"),
                sign_off=sign_off,
            )
            if reply.accepted:
                _accepted(path).inc()
            else:
                assert reply.error is not None
                MESSAGES.labels(path, reply.error.code).inc()
                log.info(
                    "message refused",
                    **(call.about() or peek(body)),
                    code=reply.error.code,
                    reason=reply.error.message,
                )
        finally:
            _reset(**bound)
            CALL.reset(token)
        _latency(path).observe(time.perf_counter() - started)
        return reply

    async def inbox_reply(self, msg: Msg) -> Reply:
        """The verdict on one inbox message; who sent it is read from its subject."""
        principal, _ = from_subject(msg.subject, INBOX_PREFIX, self.auth or NOBODY)
        if principal is None:
            return Reply.fail("unauthenticated", UNKNOWN_CREDENTIAL)
        return await self.handle(msg.data, "inbox", type_token(msg.subject), None, principal)

    async def record_rejection(self, msg: Msg, reply: Reply) -> None:
        """Keep a refused inbox message and why on ``MILESTONES_REJECTIONS`` (deduplicated by
        its inbox position, so a redelivery records it once). Raises when the record could not
        be written: the caller must not ack the message then."""
        assert reply.error is not None
        seq = msg.metadata.sequence.stream
        text, b64 = shown_payload(msg.data)
        rejection = Rejection(
            inbox_seq=seq,
            subject=msg.subject,
            received=dt.datetime.now(dt.UTC),
            code=reply.error.code,
            message=reply.error.message,
            payload=text,
            payload_base64=b64,
            deliveries=msg.metadata.num_delivered,
        )
        token = type_token(msg.subject) or "unknown"
        await self.js.publish(
            rejection_subject(token),
            ENCODER.encode(rejection),
            stream=REJECTIONS_STREAM,
            headers={"Nats-Msg-Id": f"inbox-{seq}"},
        )
        log.warning(
            "inbox message rejected",
            **peek(msg.data, msg.headers),
            inbox_seq=seq,
            code=reply.error.code,
            reason=reply.error.message,
        )


def shown_payload(data: bytes) -> tuple[str | None, str | None]:
    """A refused message as the rejection record keeps it (text, or base64 when it is not UTF-8),
    never with a secret it carried. JSON too deep to parse is redacted by pattern, like broken
    JSON; whatever the bytes, a record is made."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None, base64.b64encode(redact_bytes(data)).decode()
    try:
        if json_too_deep(data):
            return redact_bytes(data).decode(), None
        return redact_json_text(text), None
    except Exception:  # noqa: BLE001 - a record without the text beats no record
        log.exception("rejected payload could not be redacted; kept as base64")
        return None, base64.b64encode(redact_bytes(data)).decode()
