"""The inbox consumer: pulls milestones.inbox.<Type> in order, decides, acks.

Written on nats-py rather than as a FastStream ``PullSub(batch=True)`` subscriber: FastStream's
batch loop re-fetches with whatever is left of its deadline, and a fetch with a near-zero
deadline can leave a pull request on the server that captures the next message where nobody
reads it; that message then waits out ``ack_wait``. Measured here: 1 inbox message in 40 took
30 s. A fixed poll (4 fetches a second when idle, so a stop is seen within 250 ms) has no such gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.intake_service import IntakeService
from services.store import INBOX_STREAM

log = structlog.get_logger("milestones.inbox")
INBOX_SUBJECT = "milestones.inbox.>"
INBOX_DURABLE = "milestones-intake"


class InboxConsumer:
    def __init__(self, nc: NATS, intake: IntakeService, batch: int = 200, poll: float = 0.25) -> None:
        self.nc = nc
        self.intake = intake
        self.batch = batch
        self.poll = poll

    async def run(self, stop: asyncio.Event) -> None:
        psub = await self.nc.jetstream().pull_subscribe(
            INBOX_SUBJECT, durable=INBOX_DURABLE, stream=INBOX_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                  ack_wait=60, max_ack_pending=self.batch * 4),
        )
        await consume_batches(psub, self.batch, self.poll, stop, self.intake.handle_inbox, "inbox")


async def consume_batches(psub, batch: int, poll: float, stop: asyncio.Event,
                          handle: Callable[[list[Msg]], Awaitable[None]], what: str) -> None:
    """Fetch, handle, ack, until ``stop``; a batch whose handling fails is nacked whole, so it is
    redelivered in order (handlers are idempotent: receipts, rollup schedules)."""
    try:
        while not stop.is_set():
            try:
                msgs = await psub.fetch(batch, timeout=poll)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                return
            try:
                await handle(msgs)
            except Exception as exc:
                log.warning("batch will be redelivered", consumer=what, error=repr(exc), messages=len(msgs))
                for m in msgs:
                    await m.nak(delay=1.0)
                continue
            for m in msgs:
                await m.ack()
    finally:
        try:
            await psub.unsubscribe()
        except Exception:  # noqa: BLE001 - shutting down
            pass
