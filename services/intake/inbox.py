"""The inbox consumer: pulls milestones.inbox.<Type> in order, decides, acks.

Written on nats-py rather than as a FastStream ``PullSub(batch=True)`` subscriber: FastStream's
batch loop re-fetches with whatever is left of its deadline, and a fetch with a near-zero
deadline can leave a pull request on the server that captures the next message where nobody
reads it; that message then waits out ``ack_wait``. Measured here: 1 inbox message in 40 took
30 s. A fixed poll (4 fetches a second when idle, so a stop is seen within 250 ms) has no such gap.
"""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client as NATS

from events.subjects import INBOX, INBOX_STREAM
from services.eventlog.consume import consume_batches, durable_pull
from services.intake.service import IntakeService

log = structlog.get_logger("milestones.inbox")
INBOX_DURABLE = "milestones-intake"


class InboxConsumer:
    def __init__(
        self, nc: NATS, intake: IntakeService, batch: int = 200, poll: float = 0.25
    ) -> None:
        self.nc = nc
        self.intake = intake
        self.batch = batch
        self.poll = poll

    async def run(self, stop: asyncio.Event) -> None:
        psub = await durable_pull(
            self.nc,
            INBOX,
            durable=INBOX_DURABLE,
            stream=INBOX_STREAM,
            ack_wait=60,
            max_ack_pending=self.batch * 4,
        )
        await consume_batches(psub, self.batch, self.poll, stop, self.intake.handle_inbox, "inbox")
