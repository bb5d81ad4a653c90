"""Deadlines: time passing, as an event.

For every milestone planned or rescheduled, the scheduler stores a JetStream message schedule
(ADR-51, server 2.12+) in ``MILESTONES_INBOX`` on ``milestones.schedules.<project>.<milestone>``:
``Nats-Schedule: @at <deadline>``, ``Nats-Schedule-Target: milestones.inbox.DeadlineReached``,
and the ``DeadlineReached`` CloudEvent as the body. When the time comes the *server* publishes
that CloudEvent into the inbox, where the intake decides it like any other message. So:

- nothing is guessed at query time, nothing fires early, and a deadline survives restarts of
  every service: the schedule is a stored message, and the inbox keeps what it fires;
- a reschedule replaces the schedule (one schedule per subject), and a deadline that still
  fires for a replaced date changes nothing (the decider checks ``due``);
- the CloudEvent id is ``deadline:<project>:<milestone>:<due>``, so receipts make a second firing
  of the same deadline harmless.

The deadline of a due date is midnight UTC after it (the milestone is due *by the end of* its
date). The scheduler follows the event log with a durable consumer and acks a batch of events
only after the batch's schedules are stored, together, as one atomic batch
(``store_schedules``): a crash in between is repaired by redelivery.

A deadline already past when it is scheduled (a plan imported late, a tracker replaying its
backlog, the demo, a scheduler catching up after downtime) fires ``late_grace`` after it is
scheduled, not at once: the history that follows the plan is usually back-dated (a task done
before the deadline, reported later), and a deadline fired at once would judge the milestone
before that history arrives, recording a miss that never happened. The ``DeadlineReached``
keeps the deadline as its ``time`` either way: it is dated when the deadline passed, and
delivered late. A history that takes longer than the grace to arrive should carry its own
``DeadlineReached`` events where they belong (as the demo does) or plan after the facts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events import ENCODER, MilestonePlanned, MilestoneRescheduled, decode_stored
from events.subjects import EVENTS_STREAM, MILESTONE_EVENTS, inbox_subject, schedule_subject
from services.domain.milestone import deadline
from services.eventlog.consume import consume_batches, durable_pull
from services.eventlog.log import MAX_BATCH_MESSAGES, publish_batch

log = structlog.get_logger("milestones.scheduler")
SCHEDULER_DURABLE = "milestones-scheduler"
TARGET = inbox_subject("DeadlineReached")
SOURCE = "milestones-scheduler"
# how long a deadline already past when scheduled waits for the back-dated history behind it
LATE_DEADLINE_GRACE = dt.timedelta(minutes=5)
# an event that schedules has one of these type names in its stored bytes (its ``type``)
_PLANNED = MilestonePlanned.__name__.encode()
_RESCHEDULED = MilestoneRescheduled.__name__.encode()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def firing_time(deadline_at: dt.datetime, now: dt.datetime, grace: dt.timedelta) -> dt.datetime:
    """When the server fires a deadline scheduled at ``now``: on time, or, when it has passed
    already, ``grace`` later (whole seconds: the schedule's ``@at`` names seconds)."""
    if deadline_at > now:
        return deadline_at
    late = now + grace
    return late.replace(microsecond=0) + dt.timedelta(seconds=1 if late.microsecond else 0)


def deadline_event(project_id: str, milestone_id: str, due: dt.date, at: dt.datetime) -> bytes:
    return ENCODER.encode(
        {
            "specversion": "1.0",
            "id": f"deadline:{project_id}:{milestone_id}:{due.isoformat()}",
            "source": SOURCE,
            "type": "DeadlineReached",
            "time": at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "actor": SOURCE,
            "data": {
                "project_id": project_id,
                "milestone_id": milestone_id,
                "due": due.isoformat(),
            },
        }
    )


@dataclass(frozen=True, slots=True)
class Schedule:
    """A message schedule to store: its subject (one per milestone), body and headers."""

    subject: str
    body: bytes
    headers: dict[str, str]


class ScheduleFailed(Exception):
    """The inbox stream did not store a batch of schedules (its batch is redelivered)."""


async def store_schedules(nc: NATS, schedules: Sequence[Schedule], timeout: float) -> int:
    """Store ``schedules`` in the inbox stream as one atomic batch (ADR-50): all or none, one
    write and one fsync for the lot. Each subject at most once: the server refuses a batch that
    replaces a subject's schedule twice ("batch rollup sub invalid"). Returns the last sequence.

    Why not ``publish_async`` per schedule (as before): under ``sync_interval: always`` each
    stored message is an fsync of its own; measured on this machine, 0.12-0.21 ms of
    nats-server CPU per schedule against 0.025 ms in batches of 500, and the client's cost a
    third."""
    try:
        ack = await publish_batch(nc, [(s.subject, s.body, s.headers) for s in schedules], timeout)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        raise ScheduleFailed(
            f"the inbox stream did not store {len(schedules)} deadline schedule(s): {exc!r}"
        ) from exc
    if ack.get("error") or ack.get("count") != len(schedules):
        raise ScheduleFailed(f"a batch of {len(schedules)} deadline schedule(s) refused: {ack}")
    return int(ack["seq"])


class Scheduler:
    def __init__(
        self,
        nc: NATS,
        *,
        deadline_at: Callable[[dt.date], dt.datetime] = deadline,
        late_grace: dt.timedelta = LATE_DEADLINE_GRACE,
        clock: Callable[[], dt.datetime] = _utcnow,
        batch: int = 500,
        poll: float = 0.25,
        timeout: float = 10.0,
    ) -> None:
        self.nc = nc
        self.deadline_at = deadline_at  # the clock is an input: tests bring deadlines near
        self.late_grace = late_grace
        self.clock = clock
        self.batch = batch
        self.poll = poll
        self.timeout = timeout

    def schedule(self, project_id: str, milestone_id: str, due: dt.date) -> Schedule:
        """The milestone's deadline as a schedule (storing it replaces the one before). The
        CloudEvent is dated at the deadline even when it fires later (``firing_time``)."""
        at = self.deadline_at(due)
        fire = firing_time(at, self.clock(), self.late_grace)
        spec = fire.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Schedule(
            schedule_subject(project_id, milestone_id),
            deadline_event(project_id, milestone_id, due, at),
            {"Nats-Schedule": f"@at {spec}", "Nats-Schedule-Target": TARGET},
        )

    async def run(self, stop: asyncio.Event) -> None:
        psub = await durable_pull(
            self.nc,
            MILESTONE_EVENTS,
            durable=SCHEDULER_DURABLE,
            stream=EVENTS_STREAM,
            ack_wait=60,
            max_ack_pending=self.batch * 2,
        )
        await consume_batches(psub, self.batch, self.poll, stop, self._schedule_batch, "scheduler")

    async def _schedule_batch(self, msgs: list[Msg]) -> None:
        """The batch's schedules, stored together; a milestone scheduled twice in the batch
        keeps the later one (stream order: the last schedule wins, as it would one by one)."""
        latest: dict[str, Schedule] = {}
        for m in msgs:
            if (s := self._schedule_for(m.data)) is not None:
                latest[s.subject] = s
        todo = list(latest.values())
        for i in range(0, len(todo), MAX_BATCH_MESSAGES):  # (a batch option above the limit)
            await store_schedules(self.nc, todo[i : i + MAX_BATCH_MESSAGES], self.timeout)

    def _schedule_for(self, data: bytes) -> Schedule | None:
        if _PLANNED not in data and _RESCHEDULED not in data:
            return None  # (most events: a type only these two names schedule, not decoded)
        try:
            event = decode_stored(data).data
        except ValueError:
            return None  # an event this version cannot read: the projections park it
        match event:
            case MilestonePlanned(project_id=p, milestone_id=m, due=due):
                return self.schedule(p, m, due)
            case MilestoneRescheduled(project_id=p, milestone_id=m, new_due=due):
                return self.schedule(p, m, due)
        return None
