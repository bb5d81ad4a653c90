"""FastStream handlers: request/reply commands and the JetStream inbox. Thin shells."""

from __future__ import annotations

from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage, NatsMessage

from events import ENCODER
from services.intake_service import IntakeService, _type_token
from services.store import INBOX_STREAM

COMMANDS_SUBJECT = "milestones.commands.*"
INBOX_SUBJECT = "milestones.inbox.>"
INTAKE_QUEUE = "milestones-intake"
INBOX_DURABLE = "milestones-intake"


def register_intake(broker: NatsBroker, intake: IntakeService, *, workers: int, inbox_batch: int) -> None:
    @broker.subscriber(
        COMMANDS_SUBJECT, queue=INTAKE_QUEUE, max_workers=workers,
        title="milestones.commands.<Type>",
        description="Request/reply: one CloudEvent (or a JSON array on milestones.commands.batch); "
        "the reply says accepted with event positions, or why not.",
    )
    async def on_command(msg: NatsMessage = Context("message")) -> bytes:
        subject = msg.raw_message.subject
        reply = await intake.handle(msg.body, "commands", _type_token(subject), msg.correlation_id)
        return ENCODER.encode(reply)

    @broker.subscriber(
        INBOX_SUBJECT,
        stream=JStream(INBOX_STREAM, declare=False),
        durable=INBOX_DURABLE,
        pull_sub=PullSub(batch_size=inbox_batch, timeout=0.2, batch=True),
        # Explicit: FastStream's default would drop a message whose handler raised.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="milestones.inbox.<Type>",
        description="Fire-and-forget CloudEvents captured by JetStream; refusals are recorded "
        "on milestones.rejections.<Type>.",
    )
    async def on_inbox(msg: NatsBatchMessage = Context("message")) -> None:
        await intake.handle_inbox(msg.raw_message)
