"""FastStream handler for request/reply commands. Thin shell. (The inbox: ``services.inbox``.)"""

from __future__ import annotations

from faststream import Context
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage

from events import ENCODER
from services.intake_service import IntakeService, _type_token

COMMANDS_SUBJECT = "milestones.commands.*"
INTAKE_QUEUE = "milestones-intake"


def register_intake(broker: NatsBroker, intake: IntakeService, *, workers: int) -> None:
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
