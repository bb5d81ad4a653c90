"""The inbox consumer: pulls milestones.inbox.<Type> in order, decides, settles each message.

Every message ends in one of three ways, and none loops:

- **refused for what it is** (undecodable, invalid, a business-rule refusal, unauthenticated,
  forbidden, too large): a rejection record at once (``milestones rejections``), then acked;
- **something is unavailable** (the log, a conflict storm: ``unavailable``, ``conflict``): NAKed
  with a delay that doubles per delivery up to ``retry_max_s``, for as long as it takes; the
  gauge ``milestones_inbox_waiting`` shows how many wait. An outage never makes a rejection;
- **an unknown failure** (an exception, ``internal``): retried the same way, and on delivery
  ``error_deliveries`` (counted by the server: ``num_delivered``) recorded as a rejection with
  the exception named, then acked.

A message is acked only after its rejection record is stored; if the record cannot be written
(the rejections stream is unavailable too), the message waits like any other in an outage.

Written on nats-py rather than as a FastStream ``PullSub(batch=True)`` subscriber: FastStream's
batch loop re-fetches with whatever is left of its deadline, and a fetch with a near-zero
deadline can leave a pull request on the server that captures the next message where nobody
reads it; that message then waits out ``ack_wait``. Measured here: 1 inbox message in 40 took
30 s. A fixed poll (4 fetches a second when idle, so a stop is seen within 250 ms) has no such gap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge

from events import Reply
from events.errors import Rejected
from events.subjects import INBOX, INBOX_STREAM
from services.eventlog.consume import Settlement, consume_each, durable_pull
from services.eventlog.log import MAX_BATCH_MESSAGES
from services.intake.binding import nats_structured
from services.intake.service import IntakeService

log = structlog.get_logger("milestones.inbox")
INBOX_DURABLE = "milestones-intake"
# The message is fine, the system was not: wait for it, however long.
WAIT_CODES = frozenset({"unavailable", "conflict"})
# A failure nobody understands: retried a bounded number of times.
ERROR_CODES = frozenset({"internal"})

WAITING = Gauge(
    "milestones_inbox_waiting",
    "Inbox messages waiting out an outage (NAKed for unavailable or conflict, not yet settled)",
)
OUTCOMES = Counter(
    "milestones_inbox_outcomes_total",
    "Inbox deliveries by outcome: accepted, rejected, waiting (outage), retried (error), failed "
    "(error on the last delivery: rejected as internal)",
    ["outcome"],
)

Outcome = Literal["accepted", "rejected", "waiting", "retried", "failed"]


@dataclass(frozen=True, slots=True)
class InboxPolicy:
    """How the inbox retries. The consumer: explicit acks, ``ack_wait_s``, ``max_deliver`` -1
    (the server never gives up on a message by itself: outages are waited out, and errors are
    bounded here by ``error_deliveries``), no server backoff (the NAK delay is ours)."""

    ack_wait_s: float = 60.0  # a message decided for longer comes back (receipts: harmless)
    retry_first_s: float = 0.5  # the first NAK delay; doubled per delivery
    retry_max_s: float = 10.0  # the cap: an outage's end is noticed within this long
    error_deliveries: int = 5  # an exception on this delivery (or a later one): a rejection

    def delay(self, delivered: int) -> float:
        return min(self.retry_max_s, self.retry_first_s * 2 ** min(max(delivered - 1, 0), 30))


DEFAULT_POLICY = InboxPolicy()


def as_structured(msg: Msg) -> tuple[Msg, Reply | None]:
    """The message as the intake reads it: a binary-mode CloudEvent (``ce-*`` headers) becomes
    the structured one it stands for, which is also what a rejection record then shows; or the
    refusal of a binary message that cannot be a CloudEvent (kept as it arrived)."""
    try:
        body = nats_structured(msg.headers, msg.data)
    except Rejected as exc:
        return msg, Reply.fail(exc.code, exc.message)
    return (msg if body is msg.data else dataclasses.replace(msg, data=body)), None


def outcome(reply: Reply, delivered: int, policy: InboxPolicy) -> Outcome:
    """What becomes of a message that got ``reply`` on its ``delivered``-th delivery (pure)."""
    if reply.accepted or reply.error is None:
        return "accepted"
    if reply.error.code in WAIT_CODES:
        return "waiting"
    if reply.error.code in ERROR_CODES:
        return "failed" if delivered >= policy.error_deliveries else "retried"
    return "rejected"


class InboxConsumer:
    def __init__(
        self,
        nc: NATS,
        intake: IntakeService,
        batch: int = MAX_BATCH_MESSAGES,
        poll: float = 0.25,
        depth: int = 2,
        policy: InboxPolicy | None = None,
    ) -> None:
        self.nc = nc
        self.intake = intake
        self.batch = batch
        # two batches in hand: the next is fetched and decided while the last waits for its
        # fsync (the committer pipelines its rounds); a batch as large as the committer's round
        self.depth = depth
        self.poll = poll
        self.policy = policy or DEFAULT_POLICY
        # inbox sequence -> when to forget it (a message another intake settled, or one never
        # redelivered to us, must not count forever)
        self.waiting: dict[int, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        psub = await durable_pull(
            self.nc,
            INBOX,
            durable=INBOX_DURABLE,
            stream=INBOX_STREAM,
            ack_wait=self.policy.ack_wait_s,
            max_ack_pending=self.batch * 4,
            max_deliver=-1,
        )
        await consume_each(psub, self.batch, self.poll, stop, self.settle, "inbox", self.depth)

    async def settle(self, messages: list[Msg]) -> list[Settlement]:
        """Decide a pulled batch (concurrently: the committer groups it into few appends, in
        order) and say how each message is settled."""
        prepared = [as_structured(m) for m in messages]
        messages = [m for m, _ in prepared]  # acked by the caller, which holds the originals
        replies = await asyncio.gather(*(self._reply(m, refused) for m, refused in prepared))
        outcomes = [
            outcome(r, m.metadata.num_delivered, self.policy)
            for m, r in zip(messages, replies, strict=True)
        ]
        final = [o in ("rejected", "failed") for o in outcomes]
        recorded = await asyncio.gather(
            *(
                self._record(m, r, o)
                for m, r, o, f in zip(messages, replies, outcomes, final, strict=True)
                if f
            )
        )
        stored = iter(recorded)
        settlements: list[Settlement] = []
        for m, o, f in zip(messages, outcomes, final, strict=True):
            if f and not next(stored):
                o = "waiting"  # not acked without its record: it comes back
            OUTCOMES.labels(o).inc()
            settlements.append(self._settlement(m, o))
        self._forget_stale()
        return settlements

    async def _reply(self, msg: Msg, refused: Reply | None) -> Reply:
        if refused is not None:
            return refused
        try:
            return await self.intake.inbox_reply(msg)
        except Exception as exc:  # an unknown failure: bounded retries (see ``outcome``)
            log.exception("inbox message failed", inbox_seq=msg.metadata.sequence.stream)
            return Reply.fail("internal", f"{type(exc).__name__}: {exc}")

    async def _record(self, msg: Msg, reply: Reply, what: Outcome) -> bool:
        if what == "failed":
            assert reply.error is not None
            reply = Reply.fail(
                "internal",
                f"the intake failed on this message on each of {msg.metadata.num_delivered} "
                f"deliveries, the last with {reply.error.message}; it is kept here instead of "
                "being retried again: report it, and send it again once fixed",
            )
        try:
            await self.intake.record_rejection(msg, reply)
        except Exception as exc:  # noqa: BLE001 - the message waits; the next delivery retries
            log.warning(
                "rejection not recorded: the message comes back",
                inbox_seq=msg.metadata.sequence.stream,
                error=repr(exc),
            )
            return False
        return True

    def _settlement(self, msg: Msg, what: Outcome) -> Settlement:
        seq = msg.metadata.sequence.stream
        if what in ("accepted", "rejected", "failed"):
            self.waiting.pop(seq, None)
            return None
        delay = self.policy.delay(msg.metadata.num_delivered)
        if what == "waiting":
            self.waiting[seq] = time.monotonic() + delay + self.policy.ack_wait_s
        else:
            self.waiting.pop(seq, None)
        return delay

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for seq in [s for s, until in self.waiting.items() if until < now]:
            del self.waiting[seq]
        WAITING.set(len(self.waiting))
