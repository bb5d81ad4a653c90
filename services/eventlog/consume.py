"""Pull consumption for the services' durable consumers: fetch a batch, hand it over, then either
settle it whole (scheduler, notifier: ack it, or nack it whole so it comes back in order) or
settle each message on its own (the inbox: ack one, NAK another with its own delay)."""

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
    nc: NATS,
    subject: str,
    *,
    durable: str,
    stream: str,
    ack_wait: float,
    max_ack_pending: int,
    max_deliver: int = -1,
) -> JetStreamContext.PullSubscription:
    """A durable pull consumer from the stream's start, with explicit acks: what is not acked
    (a crash, a nack) comes back. The configuration is written every start (the server's create
    updates an existing consumer), so a consumer an older version made gets today's settings.

    ``max_deliver`` -1 (the default): the server redelivers without limit and gives up on
    nothing by itself; a consumer that must bound retries counts ``num_delivered`` itself and
    settles the message (the inbox records a rejection). No server ``backoff``: it applies to
    ack timeouts only, and the handlers NAK with their own delay instead."""
    js = nc.jetstream()
    config = ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
    await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(durable, stream)


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

    async def all_or_nothing(msgs: list[Msg]) -> list[Settlement]:
        await handle(msgs)
        return [None] * len(msgs)

    await consume_each(psub, batch, poll, stop, all_or_nothing, what)


# A message's settlement: None acks it, a number of seconds NAKs it to come back after that long.
Settlement = float | None


async def consume_each(
    psub: JetStreamContext.PullSubscription,
    batch: int,
    poll: float,
    stop: asyncio.Event,
    handle: Callable[[list[Msg]], Awaitable[list[Settlement]]],
    what: str,
    depth: int = 1,
) -> None:
    """Fetch, handle, and settle each message as ``handle`` says, until ``stop``. One message
    waiting out an outage comes back alone, when its delay is over, without holding the rest of
    its batch. If ``handle`` itself fails, the batch is NAKed whole (it returns a settlement for
    every message by design: this is the net under it).

    ``depth`` batches may be handled at once: the next batch is fetched (and handed over) while
    the last one waits for its commit, as the intake's pipelined commit rounds expect. A batch
    is handed over only after the one before it was (its messages reach the committer first);
    each is settled when its own handling ends. On stop, batches in hand are finished and
    settled."""
    _buffered_first(psub)
    in_hand: set[asyncio.Future[None]] = set()
    try:
        while not stop.is_set():
            if len(in_hand) >= depth:
                _, in_hand = await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await psub.fetch(batch, timeout=poll)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                return
            task = asyncio.ensure_future(_handle_and_settle(msgs, handle, what))
            if depth == 1:
                await task
                continue
            in_hand.add(task)
            await asyncio.sleep(0)  # its handling starts before the next fetch's
    finally:
        if in_hand:
            await asyncio.gather(*in_hand, return_exceptions=True)
        await _unsubscribe(psub)


async def _handle_and_settle(
    msgs: list[Msg], handle: Callable[[list[Msg]], Awaitable[list[Settlement]]], what: str
) -> None:
    try:
        settlements = await handle(msgs)
    except Exception as exc:
        log.error("batch handler failed", consumer=what, error=repr(exc), messages=len(msgs))
        settlements = [1.0] * len(msgs)
    for m, settle in zip(msgs, settlements, strict=True):
        try:
            await (m.ack() if settle is None else m.nak(delay=settle))
        except Exception as exc:  # noqa: BLE001 - unsettled: back after ack_wait
            log.warning("settling failed", consumer=what, error=repr(exc))


def _buffered_first(psub: JetStreamContext.PullSubscription) -> None:
    """``fetch`` takes each message of a batch with ``next_msg``, which costs a task, a uuid4
    and a timer per message (nats-py 2.16), and two or three turns of the event loop: profiled
    under the benchmark's load, the scheduler's fetches were most of the intake's loop turns.
    A message nats-py has already buffered is now taken as ``next_msg`` takes it, without them
    (as ``services.ledger.store._buffered`` does); anything else (an empty buffer, a timeout
    already spent, a closed connection) is ``next_msg``'s own. ``fetch`` itself is unchanged."""
    sub = psub._sub
    queue = sub._pending_queue
    waited = sub.next_msg

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        if queue.empty() or (timeout is not None and timeout <= 0) or sub._conn.is_closed:
            return await waited(timeout)
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        return msg

    sub.next_msg = next_msg  # type: ignore[method-assign]


async def _unsubscribe(psub: JetStreamContext.PullSubscription) -> None:
    try:
        await psub.unsubscribe()
    except Exception:  # noqa: BLE001 - shutting down
        pass
