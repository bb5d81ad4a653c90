"""Telling stakeholders: webhooks on what matters, with a delivery log.

Two halves, joined by the ``deliveries`` table (a transactional outbox):

1. **Deciding what to send.** A durable pull consumer (``milestones-notifier``, explicit acks)
   follows the event log. For each event that matters (``MilestoneAchieved``,
   ``MilestoneRescheduled``, ``DependencyViolated``, ``MilestoneMissed``) it writes one delivery
   per matching subscription (once the status read model, which holds the subscriptions, has
   passed the batch), and for the subscribed projects the batch touched it judges health and writes a ``milestone.at_risk`` delivery when a
   milestone *enters* at risk or late (once per health and due date). Rows are inserted with
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
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from events import ENCODER, StoredEvent, decode_stored
from projections import status
from services import health
from services.inbox import consume_batches
from services.query_base import CheckpointWatcher
from services.store import EVENTS_STREAM

log = structlog.get_logger("milestones.notifier")
NOTIFIER_DURABLE = "milestones-notifier"
SCHEMA_SQL = (Path(__file__).parent / "sql" / "notifier.sql").read_text()
_NS = uuid.UUID("0b7e8f0c-3a8e-4d0f-9c55-6f1f4f8e2a10")
ATTEMPTS = Counter("milestones_webhook_attempts_total", "Webhook POSTs", ["outcome"])

KINDS = {
    "MilestoneAchieved": "milestone.achieved",
    "MilestoneRescheduled": "milestone.rescheduled",
    "DependencyViolated": "dependency.violated",
    "MilestoneMissed": "milestone.missed",
}
ALL_KINDS = (*KINDS.values(), "milestone.at_risk", "project.digest")


class Notification(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON body of every webhook POST."""

    id: str  # the delivery id, also the Idempotency-Key header
    kind: str
    project_id: str
    milestone_id: str | None = None
    stakeholder: str
    summary: str
    created_at: dt.datetime
    position: int | None = None  # the event's stream position
    event: dict[str, Any] | None = None  # type, id, time, actor, correlationid, data
    health: str | None = None
    reasons: list[str] | None = None
    digest: dict[str, Any] | None = None


class Subscription(msgspec.Struct, kw_only=True, frozen=True):
    project_id: str
    scope: str
    stakeholder: str
    url: str
    secret: str | None


def describe(kind: str, data: dict[str, Any]) -> str:
    """One line a person reads: what happened to which milestone."""
    m = data.get("milestone_id")
    match kind:
        case "MilestoneRescheduled":
            return f"{m} moved from {data.get('old_due')} to {data.get('new_due')}: {data.get('reason')}"
        case "MilestoneAchieved":
            return f"{m} achieved" + (f" ({data['evidence']})" if data.get("evidence") else "")
        case "DependencyViolated":
            return (f"{m} (due {data.get('due')}) cannot finish before {data.get('earliest')}: "
                    f"{data.get('depends_on')} finishes {data.get('predecessor_finish')}")
        case "MilestoneMissed":
            return f"{m} missed its due date {data.get('due')} with {len(data.get('open_tasks') or [])} open task(s)"
        case "MilestonePlanned":
            return f"{m} planned for {data.get('due')} ({data.get('kind')})"
        case "TaskCompleted":
            return f"{m}: task {data.get('task_id')} completed" + (f" ({data['result']})" if data.get("result") else "")
        case "TaskAdded":
            return f"{m}: task {data.get('task_id')} added"
        case "TaskReopened":
            return f"{m}: task {data.get('task_id')} reopened"
        case "MilestoneCancelled":
            return f"{m} cancelled: {data.get('reason')}"
        case "StatusReported":
            return f"status {data.get('health')}" + (f" for {m}" if m else "") + f": {data.get('note')}"
        case "BaselineSet":
            return f"baseline {data.get('name')} set"
        case "DependencyAdded":
            return f"{m} now depends on {data.get('depends_on')} (lag {data.get('lag_days', 0)} days)"
    return kind + (f" {m}" if m else "")


def delivery_id(key: str, sub: Subscription) -> str:
    return str(uuid.uuid5(_NS, f"{key}\n{sub.project_id}\n{sub.scope}\n{sub.stakeholder}\n{sub.url}"))


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: base * 2^(attempt-1), jittered ±10 %, capped."""
    delay = min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return min(delay, cap)


async def ensure_schema(conn: asyncpg.Connection) -> None:
    from projections.db import lock_key

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("notifier-schema"))
        await conn.execute(SCHEMA_SQL)


async def subscriptions(conn: asyncpg.Connection, projects: Iterable[str]) -> list[Subscription]:
    rows = await conn.fetch("SELECT project_id, scope, stakeholder, url, secret FROM ms_subscriptions "
                            "WHERE project_id = ANY($1::text[]) ORDER BY position", list(set(projects)))
    return [Subscription(**dict(r)) for r in rows]


def _matching(subs: Sequence[Subscription], project_id: str, milestone_id: str | None) -> list[Subscription]:
    return [s for s in subs if s.project_id == project_id and (s.scope == "" or s.scope == milestone_id)]


async def enqueue(conn: asyncpg.Connection, items: Sequence[tuple[Notification, Subscription]]) -> int:
    """Write deliveries; an id already there is a repeat and is skipped. Returns how many are new."""
    if not items:
        return 0
    rows = [(n.id, n.kind, n.project_id, n.milestone_id, s.stakeholder, s.url, s.secret, n.position, ENCODER.encode(n))
            for n, s in items]
    inserted = await conn.fetch(
        "INSERT INTO deliveries (id, kind, project_id, milestone_id, stakeholder, url, secret, position, body) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], "
        "$8::bigint[], $9::bytea[]) ON CONFLICT (id) DO NOTHING RETURNING id", *map(list, zip(*rows, strict=True)))
    return len(inserted)


def event_notifications(position: int, stored: StoredEvent, subs: Sequence[Subscription],
                        now: dt.datetime) -> list[tuple[Notification, Subscription]]:
    kind = KINDS.get(stored.type)
    if kind is None:
        return []
    data = msgspec.to_builtins(stored.data)
    data.pop("type", None)
    milestone_id = data.get("milestone_id")
    event = {"type": stored.type, "id": stored.id, "time": stored.time, "actor": stored.actor,
             "correlationid": stored.correlationid, "causationid": stored.causationid, "data": data}
    out = []
    for sub in _matching(subs, data["project_id"], milestone_id):
        out.append((Notification(id=delivery_id(stored.id, sub), kind=kind, project_id=data["project_id"], milestone_id=milestone_id,
                                 stakeholder=sub.stakeholder, summary=describe(stored.type, data), created_at=now,
                                 position=position, event=event), sub))
    return out


class Notifier:
    def __init__(self, nc: NATS, pool: asyncpg.Pool, watcher: CheckpointWatcher, *, today: Callable[[], dt.date],
                 at_risk_gap: int = health.DEFAULT_GAP, max_attempts: int = 12, backoff_base: float = 1.0,
                 backoff_max: float = 3600.0, timeout: float = 10.0, sweep_every: float = 300.0,
                 digest_every: float = 0.0, default_secret: str | None = None, batch: int = 200,
                 poll: float = 0.5, wait_for_read_models: float = 30.0) -> None:
        self.nc = nc
        self.pool = pool
        self.watcher = watcher  # the status read model (subscriptions included) must have passed a batch
        self.today = today
        self.gap = at_risk_gap
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.sweep_every = sweep_every
        self.digest_every = digest_every
        self.default_secret = default_secret
        self.batch = batch
        self.poll = poll
        self.wait_for_read_models = wait_for_read_models
        self._wake = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Needs its tables (``ensure_schema``: the wiring creates them for the query service and
        the notifier) and the status read model kept by a projection runner somewhere."""
        psub = await self.nc.jetstream().pull_subscribe(
            "milestones.events.>", durable=NOTIFIER_DURABLE, stream=EVENTS_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                  ack_wait=120, max_ack_pending=self.batch * 2))
        tasks = [asyncio.create_task(consume_batches(psub, self.batch, self.poll, stop, self.handle, "notifier")),
                 asyncio.create_task(self._send_loop(stop)), asyncio.create_task(self._periodic(stop))]
        try:
            await stop.wait()
        finally:
            self._wake.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("notifier task failed", error=repr(result))

    def wake(self) -> None:
        self._wake.set()

    # -- deciding ----------------------------------------------------------------------------------
    async def _caught_up(self, projection: str, position: int) -> None:
        _, reached = await self.watcher.wait(projection, position, self.wait_for_read_models)
        if not reached:  # the batch is nacked and comes back: nothing is decided on a stale read model
            raise RuntimeError(f"read model {projection} has not reached position {position} yet")

    async def handle(self, msgs: list) -> None:
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
        projects = {e.data.project_id for _, e in events}  # type: ignore[attr-defined]
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
            by_project = await status.load(conn, projects)
            seen = {(r["project_id"], r["milestone_id"]): (r["health"], r["due"]) for r in await conn.fetch(
                "SELECT * FROM notified_health WHERE project_id = ANY($1::text[]) FOR UPDATE", projects)}
            items: list[tuple[Notification, Subscription]] = []
            announce, clear = [], []
            for pid, project_rows in by_project.items():
                verdicts = health.judge(project_rows, self.today(), self.gap)
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
                    for sub in _matching(subs, pid, r.milestone_id):
                        nid = delivery_id(f"health:{pid}:{r.milestone_id}:{v.health}:{r.due.isoformat()}", sub)
                        items.append((Notification(
                            id=nid, kind="milestone.at_risk", project_id=pid, milestone_id=r.milestone_id,
                            stakeholder=sub.stakeholder, created_at=now, health=v.health, reasons=v.reasons,
                            summary=f"{r.milestone_id} ({r.name}) is {v.health.replace('_', ' ')}: {v.reasons[0]}"),
                            sub))
            if clear:
                await conn.executemany("DELETE FROM notified_health WHERE project_id = $1 AND milestone_id = $2", clear)
            if announce:
                await conn.executemany(
                    "INSERT INTO notified_health VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, milestone_id) "
                    "DO UPDATE SET health = EXCLUDED.health, due = EXCLUDED.due", announce)
            return await enqueue(conn, items)

    async def _periodic(self, stop: asyncio.Event) -> None:
        """The clock moves without events: re-judge health, and send digests when they are due."""
        from services import digest

        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.sweep_every)
                return
            except TimeoutError:
                pass
            try:
                async with self.pool.acquire() as conn:
                    watched = [r["project_id"] for r in await conn.fetch(
                        "SELECT DISTINCT project_id FROM ms_subscriptions")]
                new = await self.check_health(watched) if watched else 0
                if self.digest_every > 0:
                    new += await digest.send_due(self.pool, self.today(), self.gap, self.digest_every)
                if new:
                    self.wake()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("notifier sweep failed; next sweep retries", error=repr(exc))

    # -- sending -----------------------------------------------------------------------------------
    _CLAIM = (
        "UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => $1) FROM ("
        "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now() "
        "ORDER BY next_attempt_at LIMIT 32 FOR UPDATE SKIP LOCKED) c WHERE d.id = c.id "
        "RETURNING d.id, d.kind, d.url, d.secret, d.body, d.attempts")

    async def _send_loop(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, follow_redirects=False) as client:
            while not stop.is_set():
                try:
                    claimed = await self.pool.fetch(self._CLAIM, self.timeout + 30)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("cannot claim deliveries; retrying", error=repr(exc))
                    claimed = []
                if claimed:
                    await asyncio.gather(*(self._attempt(client, d) for d in claimed))
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                except TimeoutError:
                    pass

    async def _attempt(self, client: httpx.AsyncClient, d: asyncpg.Record) -> None:
        attempt = d["attempts"] + 1
        body: bytes = d["body"]
        headers = {"content-type": "application/json", "user-agent": "milestones-notifier",
                   "idempotency-key": d["id"], "x-milestones-delivery": d["id"], "x-milestones-kind": d["kind"],
                   "x-milestones-attempt": str(attempt)}
        secret = d["secret"] or self.default_secret
        if secret:
            headers["x-milestones-signature"] = sign(secret, body)
        bound = log.bind(delivery=d["id"], kind=d["kind"], url=d["url"], attempt=attempt)
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            response = await client.post(d["url"], content=body, headers=headers)
            code = response.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}: {response.text[:200]}"
                try:
                    retry_after = float(response.headers.get("retry-after", ""))
                except ValueError:
                    retry_after = None
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        elapsed = (time.perf_counter() - started) * 1000
        if error is None:
            state, delay = "delivered", 0.0
        elif attempt >= self.max_attempts:
            state, delay = "failed", 0.0
        else:
            state, delay = "pending", backoff(attempt, self.backoff_base, self.backoff_max, retry_after)
        ATTEMPTS.labels(outcome=state).inc()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO delivery_attempts VALUES ($1, $2, now(), $3, $4, $5) ON CONFLICT DO NOTHING",
                d["id"], attempt, code, error, elapsed)
            await conn.execute(
                "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = now() + make_interval(secs => $4), "
                "last_status = $5, last_error = $6, delivered_at = CASE WHEN $2 = 'delivered' THEN now() END "
                "WHERE id = $1", d["id"], state, attempt, delay, code, error)
        if state == "delivered":
            bound.info("webhook delivered", status=code, ms=round(elapsed, 1))
        elif state == "failed":
            bound.error("webhook failed for good", error=error)
        else:
            bound.warning("webhook attempt failed; will retry", error=error, retry_in_s=round(delay, 2))
