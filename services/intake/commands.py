"""Request/reply commands on ``milestones.commands.<Type>``. Thin shell over ``IntakeService``.

Served with a plain nats-py queue subscription, not a FastStream subscriber. Profiled under the
benchmark load (py-spy, 256 concurrent requesters): FastStream's per-message machinery (context
scopes, fast_depends injection with a thread-pool hop, middleware stacks, a stdlib JSON decode of
every body, a uuid4 correlation id) took ~60 % of the intake's CPU, the decision and the append
~15 %. The loop below does what that machinery did for us: bounded concurrency, one reply per
request, no crash on a bad message. FastStream still serves the query subjects, where the
per-message cost does not matter; the AsyncAPI document is written from the msgspec types
(``services.app.asyncapi``).
"""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events import ENCODER, Reply
from events.errors import Rejected
from events.subjects import ALL_COMMANDS, COMMANDS_PREFIX, type_token
from services.auth.principal import (
    NOBODY,
    UNKNOWN_CREDENTIAL,
    Authenticator,
    Principal,
    from_subject,
)
from services.intake.binding import nats_structured
from services.intake.service import IntakeService

log = structlog.get_logger("milestones.commands")
INTAKE_QUEUE = "milestones-intake"
CORRELATION_HEADER = "correlation_id"  # what FastStream publishers set; optional


class CommandServer:
    """At most ``workers`` requests in flight; when all are busy the subscription's pending
    buffer holds the rest (NATS flow control, no unbounded task growth)."""

    def __init__(
        self, nc: NATS, intake: IntakeService, *, workers: int, auth: Authenticator = NOBODY
    ) -> None:
        self.auth = auth
        self.nc = nc
        self.intake = intake
        self.slots = asyncio.Semaphore(workers)
        self.tasks: set[asyncio.Task] = set()
        self.sub: Subscription | None = None

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(
            ALL_COMMANDS,
            queue=INTAKE_QUEUE,
            cb=self._on_message,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=1 << 30,
        )

    async def stop(self) -> None:
        """Stop taking requests, answer the ones in flight."""
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=30)

    async def _on_message(self, msg: Msg) -> None:
        await self.slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.slots.release()

    async def _handle(self, msg: Msg) -> None:
        correlation = msg.headers.get(CORRELATION_HEADER) if msg.headers else None
        try:
            principal, _ = from_subject(msg.subject, COMMANDS_PREFIX, self.auth)
            if principal is None:
                reply = Reply.fail("unauthenticated", UNKNOWN_CREDENTIAL)
            else:
                reply = await self._decide(msg, correlation, principal)
        except Exception as exc:
            # never let one message take the service down; say so in the reply
            log.exception("command failed", subject=msg.subject)
            reply = Reply.fail(
                "unavailable",
                f"the intake failed on this message ({type(exc).__name__}); "
                "nothing was half-written, send it again",
            )
        if msg.reply:
            # Not ``msg.respond``: nats-py's respond sends the request's headers back, and a
            # request that crossed the server's account import carries ``Nats-Request-Info``
            # (the account slot and a round-trip time). Echoing it cost every reply a header
            # to encode, route and parse (measured: the secured intake's extra CPU per command)
            # and told the client server-internal facts. Only a caller's correlation id returns.
            headers = {CORRELATION_HEADER: correlation} if correlation else None
            try:
                await self.nc.publish(msg.reply, ENCODER.encode(reply), headers=headers)
            except Exception as exc:  # the connection is going away; the requester will time out
                log.warning("reply not sent", subject=msg.subject, error=repr(exc))

    async def _decide(self, msg: Msg, correlation: str | None, principal: Principal) -> Reply:
        try:  # binary mode (ce-* headers) becomes the structured CloudEvent it stands for
            body = nats_structured(msg.headers, msg.data)
        except Rejected as exc:
            return Reply.fail(exc.code, exc.message)
        return await self.intake.handle(
            body, "commands", type_token(msg.subject), correlation, principal
        )
