"""Telling stakeholders: webhooks on what matters, with a delivery log.

Two halves, joined by the ``deliveries`` table (a transactional outbox):

1. **Deciding what to send.** A durable pull consumer (``milestones-notifier``, explicit acks)
   follows the event log. For each event that matters (``MilestoneAchieved``,
   ``MilestoneRescheduled``, ``DependencyViolated``, ``MilestoneMissed``, and a decision gate's
   ``ApprovalRequested``, ``MilestoneApproved``, ``MilestoneApprovalRejected``) it writes one
   delivery per matching subscription (once the status read model, which holds the
   subscriptions, has passed the batch), and for the subscribed projects the batch touched it
   judges health and writes a ``milestone.at_risk`` delivery when a milestone *enters* at risk
   or late (once per health and due date). Rows are inserted with
   ``ON CONFLICT DO NOTHING`` on a deterministic id, and the batch is acked only after they are
   committed: a crash before the ack redelivers the batch and duplicates nothing. So no
   notification is lost and none is made twice. A periodic sweep repeats the health check
   (the clock moves without events) and sends project digests on schedule.
2. **Sending.** A sender claims due deliveries (``FOR UPDATE SKIP LOCKED`` and a lease, so
   several notifiers share the work), POSTs the stored body, and records every attempt. A
   non-2xx answer or a network error is retried with exponential backoff (``Retry-After`` is
   honoured up to the cap) until ``notify_max_attempts``; then the delivery is ``failed``.

Every POST carries ``Idempotency-Key`` (the delivery id: the same on every retry of one
notification, so receivers drop duplicates) and, when the subscription has a secret (or the
notifier has a default one), ``X-Milestones-Signature: sha256=<hex HMAC-SHA256 of the body>``.
Secrets are stored sealed and opened with the ``keyring`` only to sign; POSTs go only where the
``targets`` policy allows, to the address it checked (``services.notify.targets``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Iterable

import asyncpg
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Gauge

from events import MilestoneEvent, ProjectEvent, StoredEvent, decode_stored
from events.subjects import ALL_EVENTS, EVENTS_STREAM
from projections.status import queries as status_queries
from projections.watch import CheckpointWatcher
from services.domain import health
from services.eventlog.consume import consume_batches, durable_pull
from services.notify import digest
from services.notify.decision import event_notifications, matching
from services.notify.outbox import Notification, Subscription, delivery_id, enqueue, subscriptions
from services.notify.secretbox import Keyring
from services.notify.sender import Sender
from services.notify.targets import Resolver, TargetPolicy, system_resolver

log = structlog.get_logger("milestones.notifier")
NOTIFIER_DURABLE = "milestones-notifier"
DELIVERIES = Gauge(
    "milestones_deliveries",
    "Webhook deliveries now: pending (not delivered yet, retries included) or failed (gave up)",
    ["status"],
)
# two counts by status, never over the delivered rows (a partial index each: deliveries_due,
# and deliveries_failed from the migrations)
COUNT_DELIVERIES = (
    "SELECT ARRAY[(SELECT count(*) FROM deliveries WHERE status = 'pending'),"
    " (SELECT count(*) FROM deliveries WHERE status = 'failed')]"
)


class Notifier:
    def __init__(
        self,
        nc: NATS,
        pool: asyncpg.Pool,
        watcher: CheckpointWatcher,
        *,
        today: Callable[[], dt.date],
        at_risk_gap: int = health.DEFAULT_GAP,
        max_attempts: int = 12,
        backoff_base: float = 1.0,
        backoff_max: float = 3600.0,
        timeout: float = 10.0,
        sweep_every: float = 300.0,
        digest_every: float = 0.0,
        default_secret: str | None = None,
        keyring: Keyring | None = None,
        targets: TargetPolicy | None = None,
        resolver: Resolver = system_resolver,
        batch: int = 200,
        poll: float = 0.5,
        wait_for_read_models: float = 30.0,
        count_every: float = 5.0,
    ) -> None:
        self.nc = nc
        self.pool = pool
        # the status read model (subscriptions included) must have passed a batch
        self.watcher = watcher
        self.today = today
        self.gap = at_risk_gap
        self.sweep_every = sweep_every
        self.digest_every = digest_every
        self.batch = batch
        self.poll = poll
        self.wait_for_read_models = wait_for_read_models
        self._wake = asyncio.Event()
        self.count_every = count_every  # the deliveries gauges, at least this often
        self._recount = asyncio.Event()
        self.sender = Sender(
            pool,
            self._wake,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            timeout=timeout,
            default_secret=default_secret,
            poll=poll,
            keyring=keyring,
            targets=targets,
            resolver=resolver,
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Needs its tables (``ensure_schema``: the wiring creates them for the query service and
        the notifier) and the status read model kept by a projection runner somewhere."""
        psub = await durable_pull(
            self.nc,
            ALL_EVENTS,
            durable=NOTIFIER_DURABLE,
            stream=EVENTS_STREAM,
            ack_wait=120,
            max_ack_pending=self.batch * 2,
        )
        tasks = [
            asyncio.create_task(
                consume_batches(psub, self.batch, self.poll, stop, self.handle, "notifier")
            ),
            asyncio.create_task(self.sender.run(stop)),
            asyncio.create_task(self._periodic(stop)),
            asyncio.create_task(self._count_deliveries(stop)),
        ]
        try:
            await stop.wait()
        finally:
            self._wake.set()
            self._recount.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("notifier task failed", error=repr(result))

    def wake(self) -> None:
        self._wake.set()
        self._recount.set()

    async def _count_deliveries(self, stop: asyncio.Event) -> None:
        """``milestones_deliveries``: every ``count_every`` seconds, and soon after deliveries
        were queued. A failed count keeps the last values (the next one tries again)."""
        while not stop.is_set():
            self._recount.clear()
            try:
                async with self.pool.acquire() as conn:
                    counts = await conn.fetchval(COUNT_DELIVERIES, timeout=self.count_every)
                pending, failed = counts
                DELIVERIES.labels("pending").set(pending)
                DELIVERIES.labels("failed").set(failed)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.debug("deliveries not counted", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recount.wait(), self.count_every)

    # -- deciding ----------------------------------------------------------------------------------
    async def _caught_up(self, projection: str, position: int) -> None:
        _, reached = await self.watcher.wait(projection, position, self.wait_for_read_models)
        if not reached:
            # the batch is nacked and comes back: nothing is decided on a stale read model
            raise RuntimeError(f"read model {projection} has not reached position {position} yet")

    async def handle(self, msgs: list[Msg]) -> None:
        events: list[tuple[int, StoredEvent]] = []
        for m in msgs:
            try:
                events.append((m.metadata.sequence.stream, decode_stored(m.data)))
            except ValueError:
                continue  # an event this version cannot read: the projections park it
        if not events:
            return
        last = max(p for p, _ in events)
        await self._caught_up("status", last)  # subscriptions and status rows are both in it
        projects = {
            e.data.project_id
            for _, e in events
            if isinstance(e.data, ProjectEvent | MilestoneEvent)
        }
        now = dt.datetime.now(dt.UTC)
        async with self.pool.acquire() as conn:
            subs = await subscriptions(conn, projects)
            if not subs:
                return
            items = [item for p, e in events for item in event_notifications(p, e, subs, now)]
            async with conn.transaction():
                new = await enqueue(conn, items)
        new += await self.check_health({s.project_id for s in subs})
        if new:
            log.info("notifications queued", deliveries=new, up_to=last)
            self.wake()

    async def check_health(self, projects: Iterable[str]) -> int:
        """At risk / late milestones not announced yet (for this health and due date): notify."""
        projects = sorted(set(projects))
        now = dt.datetime.now(dt.UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            subs = await subscriptions(conn, projects)
            by_project = await status_queries.load(conn, projects)
            targets = await status_queries.targets(conn, projects)
            seen = {
                (r["project_id"], r["milestone_id"]): (r["health"], r["due"])
                for r in await conn.fetch(
                    "SELECT * FROM notified_health WHERE project_id = ANY($1::text[]) FOR UPDATE",
                    projects,
                )
            }
            items: list[tuple[Notification, Subscription]] = []
            announce, clear = [], []
            for pid, project_rows in by_project.items():
                verdicts = health.judge(project_rows, self.today(), self.gap, targets[pid])
                for r in project_rows:
                    v = verdicts[r.milestone_id]
                    key = (pid, r.milestone_id)
                    if v.health not in ("at_risk", "late"):
                        if key in seen:
                            clear.append(key)
                        continue
                    if seen.get(key) == (v.health, r.due):
                        continue
                    announce.append((pid, r.milestone_id, v.health, r.due))
                    for sub in matching(subs, pid, r.milestone_id):
                        nid = delivery_id(
                            f"health:{pid}:{r.milestone_id}:{v.health}:{r.due.isoformat()}", sub
                        )
                        items.append(
                            (
                                Notification(
                                    id=nid,
                                    kind="milestone.at_risk",
                                    project_id=pid,
                                    milestone_id=r.milestone_id,
                                    stakeholder=sub.stakeholder,
                                    created_at=now,
                                    health=v.health,
                                    reasons=v.reasons,
                                    summary=(
                                        f"{r.milestone_id} ({r.name}) is "
                                        f"{v.health.replace('_', ' ')}: {v.reasons[0]}"
                                    ),
                                ),
                                sub,
                            )
                        )
            if clear:
                await conn.executemany(
                    "DELETE FROM notified_health WHERE project_id = $1 AND milestone_id = $2", clear
                )
            if announce:
                await conn.executemany(
                    "INSERT INTO notified_health VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (project_id, milestone_id) "
                    "DO UPDATE SET health = EXCLUDED.health, due = EXCLUDED.due",
                    announce,
                )
            return await enqueue(conn, items)

    async def _periodic(self, stop: asyncio.Event) -> None:
        """The clock moves without events: re-judge health, and send digests when they are due."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.sweep_every)
                return
            except TimeoutError:
                pass
            try:
                async with self.pool.acquire() as conn:
                    watched = await status_queries.subscribed_projects(conn)
                new = await self.check_health(watched) if watched else 0
                if self.digest_every > 0:
                    new += await digest.send_due(
                        self.pool, self.today(), self.gap, self.digest_every
                    )
                if new:
                    self.wake()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("notifier sweep failed; next sweep retries", error=repr(exc))

    # -- sending -----------------------------------------------------------------------------------
