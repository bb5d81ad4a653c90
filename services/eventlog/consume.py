"""Pull consumption for the services' durable consumers: fetch a batch, hand it over, then either
settle it whole (scheduler, notifier: handled again until it succeeds, then acked; strictly in
order) or settle each message on its own (the inbox: ack one, NAK another with its own
delay)."""

from __future__ import annotations

import asyncio
import contextlib
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
    ack timeouts only, and the handlers NAK with their own delay instead.

    Explicit acks, also where a batch is settled whole: several intakes (or notifiers) may
    share one durable, and with ``AckPolicy.ALL`` one instance's ack of its batch would settle
    another's batch still in hand, lost if that instance then died (nats-py 2.16 has no
    pinned-client priority groups, ADR-42, that would keep one instance active)."""
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
    """Fetch, handle, settle, until ``stop``, one batch at a time and in order (handlers are
    idempotent: receipts, one schedule per subject, so a batch handled again is harmless).

    A batch whose handling fails is handled again here, with a growing pause, until it succeeds
    or ``stop``: never skipped, and nothing after it is fetched meanwhile. (It used to be NAKed
    with a delay while the next batch went on: the failed batch then came back *after* later
    ones, so a reschedule could be undone by the older schedule it replaced.) While it
    waits, its messages are marked in progress so the server does not redeliver them; on stop
    they are NAKed, to come back at once to whoever consumes next."""
    _buffered_first(psub)
    try:
        while not stop.is_set():
            if (msgs := await _fetch(psub, batch, poll)) is None:
                return
            if not msgs:
                continue
            if not await _handled(msgs, handle, stop, what):
                await _settle(msgs, lambda m: m.nak(), what)  # stopped: back at once, in order
                return
            await _settle(msgs, lambda m: m.ack(), what)
    finally:
        await _unsubscribe(psub)


async def _handled(
    msgs: list[Msg], handle: Callable[[list[Msg]], Awaitable[None]], stop: asyncio.Event, what: str
) -> bool:
    """Handle ``msgs`` until it succeeds (True) or ``stop`` is set (False)."""
    pause = RETRY_MIN_S
    while True:
        try:
            await handle(msgs)
            return True
        except Exception as exc:  # noqa: BLE001 - retried: a fault outside (the server, the db)
            log.error(
                "batch handler failed, trying the batch again",
                consumer=what,
                error=repr(exc),
                messages=len(msgs),
                first_sequence=msgs[0].metadata.sequence.stream,
                retry_in_s=pause,
            )
        await _settle(msgs, lambda m: m.in_progress(), what)  # not redelivered meanwhile
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return False
        pause = min(pause * 2, RETRY_MAX_S)


async def _settle(msgs: list[Msg], how: Callable[[Msg], Awaitable[None]], what: str) -> None:
    for m in msgs:
        try:
            await how(m)
        except Exception as exc:  # noqa: BLE001 - unsettled: back after ack_wait
            log.warning("settling failed", consumer=what, error=repr(exc))


RETRY_MIN_S, RETRY_MAX_S = 0.5, 15.0  # a failed batch's pauses (under the ack waits: 60, 120 s)


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
            if (msgs := await _fetch(psub, batch, poll)) is None:
                return
            if not msgs:
                continue
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


async def _fetch(
    psub: JetStreamContext.PullSubscription, batch: int, poll: float
) -> list[Msg] | None:
    """Up to ``batch`` messages; an empty list when none came within ``poll``, None when the
    connection is closing."""
    try:
        return await psub.fetch(batch, timeout=poll)
    except (TimeoutError, nats.errors.TimeoutError):
        return []
    except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
        return None


async def _handle_and_settle(
    msgs: list[Msg],
    handle: Callable[[list[Msg]], Awaitable[list[Settlement]]],
    what: str,
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
