"""The intake as a service: one object that every entry point calls, plus inbox rejections."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from collections.abc import Sequence

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram

from events import ENCODER, Rejection, Reply
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
from services.intake.parse import Limits, handle
from services.intake.webhooks import STRICT, Webhooks
from services.notify.redact import redact_bytes, redact_json_text

log = structlog.get_logger("milestones.intake")

MESSAGES = Counter(
    "milestones_intake_messages_total", "Messages handled by the intake", ["path", "outcome"]
)
LATENCY = Histogram("milestones_intake_seconds", "Time from receipt to verdict", ["path"])
# Transient: the message itself is fine, the system was not; the inbox retries these.
TRANSIENT = frozenset({"unavailable", "internal"})


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
    ) -> Reply:
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            path=path, correlation_id=correlation, principal=principal.id
        ):
            reply = await handle(
                body, self.committer, self.limits, principal, expected_type, webhooks=self.webhooks
            )
            if reply.accepted:
                MESSAGES.labels(path, "accepted").inc()
            else:
                assert reply.error is not None
                MESSAGES.labels(path, reply.error.code).inc()
                log.info("message refused", code=reply.error.code, reason=reply.error.message)
        LATENCY.labels(path).observe(time.perf_counter() - started)
        return reply

    async def handle_inbox(self, messages: Sequence[Msg]) -> None:
        """Decide a pulled inbox batch in order. Refusals are recorded before the batch is
        acked; a transient failure raises so the whole batch is redelivered (receipts make
        the redelivery of already-appended messages a no-op)."""

        async def one(msg: Msg) -> Reply:
            principal, _ = from_subject(msg.subject, INBOX_PREFIX, self.auth or NOBODY)
            if principal is None:
                return Reply.fail("unauthenticated", UNKNOWN_CREDENTIAL)
            return await self.handle(msg.data, "inbox", type_token(msg.subject), None, principal)

        replies = await asyncio.gather(*(one(m) for m in messages))
        transient = [r for r in replies if not r.accepted and r.error and r.error.code in TRANSIENT]
        for msg, reply in zip(messages, replies, strict=True):
            if not reply.accepted and reply not in transient:
                await self._record_rejection(msg, reply)
        if transient:
            raise RuntimeError(
                f"{len(transient)} inbox message(s) hit a transient failure: redelivering"
            )

    async def _record_rejection(self, msg: Msg, reply: Reply) -> None:
        assert reply.error is not None
        seq = msg.metadata.sequence.stream
        # the record is kept and shown (/rejections): never with a secret the message carried
        try:
            text, b64 = redact_json_text(msg.data.decode()), None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(redact_bytes(msg.data)).decode()
        rejection = Rejection(
            inbox_seq=seq,
            subject=msg.subject,
            received=dt.datetime.now(dt.UTC),
            code=reply.error.code,
            message=reply.error.message,
            payload=text,
            payload_base64=b64,
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
            inbox_seq=seq,
            code=reply.error.code,
            reason=reply.error.message,
        )
