"""Pull consumption for the services' durable consumers (inbox, scheduler, notifier): fetch a
batch, hand it over, ack it, or nack it whole so it comes back in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

log = structlog.get_logger("milestones.consume")


async def durable_pull(
    nc: NATS, subject: str, *, durable: str, stream: str, ack_wait: float, max_ack_pending: int
) -> JetStreamContext.PullSubscription:
    """A durable pull consumer from the stream's start, with explicit acks: what is not acked
    (a crash, a nack) comes back."""
    return await nc.jetstream().pull_subscribe(
        subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
        ),
    )


async def consume_batches(
    psub: JetStreamContext.PullSubscription,
    batch: int,
    poll: float,
    stop: asyncio.Event,
    handle: Callable[[list[Msg]], Awaitable[None]],
    what: str,
) -> None:
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
                log.warning(
                    "batch will be redelivered", consumer=what, error=repr(exc), messages=len(msgs)
                )
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
