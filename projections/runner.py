"""The one projection runner: ordered read from checkpoint+1, batches, rows and checkpoint in one
transaction, one active runner per projection (advisory lock), parking of poison events
(``projections.parking``), and a supervisor that restarts it after any failure.

Reading uses nats-py's ordered push consumer rather than a FastStream subscriber: the runner must
choose its start sequence from the database on every (re)start and needs no acks; measured here
an ordered consumer reads ~4x faster than pull fetch. It is read without a callback so that
flow control holds the server back while the database is slower than the stream (``_buffered``).

Supervision lives in ``Runner.run`` itself, so that the task the wiring starts ends only on
stop: any exception (the database, NATS, a bug) is logged with its cause, counted
(``milestones_projection_restarts_total``) and followed by a restart from the checkpoint, with
exponential backoff from 0.1 s capped at 5 s. ``Runner.state`` says how it is doing (``/ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Generic

import asyncpg
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge

from events import tracing
from projections import db
from projections.base import Projection, R
from projections.parking import (
    EventFailed,
    Item,
    Settled,
    blame,
    described,
    held_back,
    settle,
)

log = structlog.get_logger("milestones.projections")

APPLIED = Counter("milestones_projection_events_total", "Events applied", ["projection"])
PARKED = Counter("milestones_projection_parked_total", "Events parked", ["projection"])
PARKED_NOW = Gauge("milestones_projection_parked_now", "Events parked now", ["projection"])
RESTARTS = Counter(
    "milestones_projection_restarts_total", "Runner restarts after a failure", ["projection"]
)
POSITION = Gauge("milestones_projection_position", "Checkpoint", ["projection"])
LAG = Gauge(
    "milestones_projection_lag",
    "Events in the stream after the checkpoint (0 when caught up)",
    ["projection"],
)

MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
IDLE_TICK = 1.0  # a whole tick without a message: caught up, as far as the server says
IDLE_PING_TICKS = 5  # and every 5 idle ticks the database is asked whether it is still there
CONNECT_TIMEOUT = 10.0


@dataclass
class RunnerState:
    running: bool = False  # the supervising loop is alive (False only after stop)
    active: bool = False  # holds this projection's advisory lock (False: standby or down)
    restarts: int = 0
    last_error: str | None = None
    progressed_at: float = 0.0  # monotonic time of the last applied batch, or of the last
    # moment it knew it was caught up
    position: int = 0
    standby: bool = False  # connected, waiting while another process holds the lock

    def ready(self, now: float, stall_after: float = 30.0) -> tuple[bool, str]:
        """(ready, why not): running, and either caught up or progressed within stall_after; a
        standby is ready."""
        if not self.running:
            return False, "stopped"
        if self.standby or now - self.progressed_at <= stall_after:
            return True, ""
        if self.active:
            return False, f"no progress for {now - self.progressed_at:.0f} s at {self.position}"
        return False, f"down after {self.restarts} restart(s): {self.last_error or 'starting'}"


@dataclass
class Runner(Generic[R]):
    projection: Projection[R]
    dsn: str
    nc: NATS
    schema: str = db.SCHEMA
    checkpoint: str = ""  # row in milestones.checkpoints; the projection's name by default
    batch_size: int = 2000
    park_after: int = 3  # unknown failures of one event before it is parked
    park_suffix: str = ""  # parked rows go to "<member name><suffix>" ("@rebuild")
    batch_timeout: float = 60.0  # one batch's transaction; beyond it the connection is dropped
    position: int = 0
    state: RunnerState = field(default_factory=RunnerState)
    _rate: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.checkpoint = self.checkpoint or self.projection.name
        self.log = log.bind(projection=self.checkpoint)
        # several read models rebuilt together (``rebuild.Together``) park each on its own
        members: list[Projection[Any]] = getattr(self.projection, "members", [self.projection])
        if self.park_suffix or len(members) > 1:
            self.members = [(m, f"{m.name}{self.park_suffix}") for m in members]
        else:
            self.members = [(self.projection, self.checkpoint)]
        self._blocked: dict[str, dict[str, int]] = {name: {} for _, name in self.members}
        self._parked_now: dict[str, int] = {name: 0 for _, name in self.members}
        self._epoch: int | None = None
        self._failures: dict[tuple[str, int], int] = {}

    # -- supervision -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, restarting after any failure. Waits as standby while another
        process holds this projection's lock."""
        self.state.running = True
        backoff = MIN_BACKOFF
        try:
            while not stop.is_set():
                progressed = self.state.progressed_at
                try:
                    await self._session(stop)
                except Exception as exc:
                    if self.state.progressed_at != progressed:
                        backoff = MIN_BACKOFF  # it worked for a while: a new failure starts over
                    self._failed(exc, backoff)
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self.state.running = self.state.active = self.state.standby = False

    def _failed(self, exc: Exception, backoff: float) -> None:
        self.state.restarts += 1
        self.state.last_error = described(exc)
        RESTARTS.labels(self.checkpoint).inc()
        fault = blame(exc)
        cause = exc.__cause__ or exc.__context__
        (self.log.warning if fault == "infrastructure" else self.log.error)(
            "runner failed, restarting",
            error=described(exc),
            cause=None if cause is None else described(cause),
            blame=fault,
            restart_in_s=backoff,
            restarts=self.state.restarts,
            position=self.position,
            exc_info=exc if fault != "infrastructure" else None,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        """One life: connect, take the lock, consume until stop or a failure."""
        conn = await db.connect(self.dsn, self._search_path, timeout=CONNECT_TIMEOUT)
        try:
            if not await self._acquire(conn, stop):
                return
            self.state.active, self.state.standby = True, False
            # a stall counts from when it took over, not from when the process started
            self.state.progressed_at = time.monotonic()
            self.log.info("active", position=await self._read_checkpoint(conn))
            await self.consume(conn, stop)
        finally:
            self.state.active = self.state.standby = False
            await _close(conn)

    async def _behind(self, sub: JetStreamContext.PushSubscription) -> int:
        """Events not yet received, set as the lag gauge. ``num_pending`` counts what has not
        been *delivered*; on a short stream the consumer may already have pushed everything to
        us, so what it has delivered is added."""
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        behind = (info.num_pending or 0) + delivered
        LAG.labels(self.checkpoint).set(behind)
        return behind

    @property
    def _search_path(self) -> str:
        return self.schema if self.schema == db.SCHEMA else f"{self.schema}, {db.SCHEMA}"

    async def _acquire(self, conn: asyncpg.Connection, stop: asyncio.Event) -> bool:
        key = db.lock_key(self.checkpoint)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return True
        self.state.standby = True
        self.log.info("standby: another process holds this projection")
        lock = asyncio.ensure_future(conn.execute("SELECT pg_advisory_lock($1)", key))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({lock, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if lock in done:
            stopped.cancel()
            lock.result()
            return True
        lock.cancel()
        return False

    async def _read_checkpoint(self, conn: asyncpg.Connection) -> int:
        await conn.execute(
            f"INSERT INTO {db.SCHEMA}.checkpoints (projection) VALUES ($1) ON CONFLICT DO NOTHING",
            self.checkpoint,
        )
        self.position = await conn.fetchval(
            f"SELECT position FROM {db.SCHEMA}.checkpoints WHERE projection = $1", self.checkpoint
        )
        self.state.position = self.position
        return self.position

    async def _load_parked(self, conn: asyncpg.Connection, epoch: int) -> None:
        """What is held back (per member), as the parked table says now."""
        for _, name in self.members:
            self._blocked[name], self._parked_now[name] = await held_back(conn, name)
            PARKED_NOW.labels(name).set(self._parked_now[name])
        self._epoch = epoch

    # -- the loop --------------------------------------------------------------------------------
    async def consume(
        self, conn: asyncpg.Connection, stop: asyncio.Event, catch_up: bool = False
    ) -> int:
        """Apply events from checkpoint+1 until ``stop``; with ``catch_up``, return as soon as
        nothing is pending (the end of the stream as it was when the last batch was read)."""
        start = await self._read_checkpoint(conn)
        # the parked set as it is now: ``parked_now`` is right from the start, not after a batch
        await self._load_parked(conn, await self._parked_epoch(conn))
        sub = await self.nc.jetstream().subscribe(
            self.projection.subject,
            stream=self.projection.stream,
            ordered_consumer=True,
            idle_heartbeat=2.0,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start + 1
            ),
        )
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        getter: asyncio.Future[Any] | None = None
        pending, idle = 1, 0
        try:
            # num_pending counts what has not been *delivered*; on a short stream the consumer
            # may already have pushed everything to us, so add what it has delivered.
            if catch_up:  # a rebuild needs to know where the log ends: here a failure is fatal
                pending = await self._behind(sub)
            else:  # the live runner only sets its lag gauge: a slow JetStream API must not
                with contextlib.suppress(Exception):  # fail (and restart) the runner
                    await self._behind(sub)
            while not stop.is_set() and pending:
                getter = getter or asyncio.ensure_future(sub.next_msg(timeout=None))
                done, _ = await asyncio.wait(
                    {getter, stopped}, timeout=IDLE_TICK, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    batch = [getter.result(), *_buffered(sub, self.batch_size - 1)]
                    getter = None
                    await self._apply_retrying(conn, batch, stop)
                    if catch_up:
                        pending = batch[-1].metadata.num_pending
                elif done:
                    break  # stopped
                else:
                    await self._idle(conn, idle := idle + 1)
                    continue
                idle = 0
        finally:
            if getter is not None:
                getter.cancel()
            stopped.cancel()
            with contextlib.suppress(Exception):  # the connection may be gone: nothing to undo
                await sub.unsubscribe()
        return self.position

    async def _idle(self, conn: asyncpg.Connection, ticks: int) -> None:
        """Nothing arrived for a tick: caught up, as far as the server says. The connection is
        checked meanwhile, so that a database that went away while all was quiet is noticed now
        (and said in the state), not at the next event."""
        if conn.is_closed():
            raise asyncpg.ConnectionDoesNotExistError("the database connection was lost while idle")
        if ticks % IDLE_PING_TICKS == 0:  # the ping reads what a replay may have changed
            if (epoch := await self._parked_epoch(conn)) != self._epoch:
                await self._load_parked(conn, epoch)
        self.state.progressed_at = time.monotonic()
        LAG.labels(self.checkpoint).set(0)  # a whole tick and nothing delivered: caught up

    async def _parked_epoch(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval(
            f"SELECT parked_epoch FROM {db.SCHEMA}.checkpoints WHERE projection = $1",
            self.checkpoint,
            timeout=CONNECT_TIMEOUT,
        )

    async def _apply_retrying(
        self, conn: asyncpg.Connection, msgs: list[Msg], stop: asyncio.Event
    ) -> None:
        """Apply a batch; an event that failed for an unknown reason is tried again (after a
        pause) until ``park_after`` failures park it. Infrastructure failures raise."""
        pause = MIN_BACKOFF
        # behind the checkpoint: this batch and what came after its last event
        LAG.labels(self.checkpoint).set(len(msgs) + (msgs[-1].metadata.num_pending or 0))
        while True:
            try:
                async with asyncio.timeout(self.batch_timeout):
                    with self._traced(msgs):
                        await self.apply(conn, msgs)
                return
            except EventFailed as failed:
                self.state.last_error = str(failed)
                self.log.warning(
                    "event failed, retrying it before parking it",
                    position=failed.position,
                    attempts=failed.attempts,
                    park_after=self.park_after,
                    error=described(failed.cause),
                )
                await _sleep_or_stop(stop, pause)
                if stop.is_set():
                    return
                pause = min(pause * 2, MAX_BACKOFF)

    def _traced(self, msgs: list[Msg]):  # -> a context manager
        """A span per batch, linked to the traces its events carry (tracing on only): an event
        is applied once per projection, so each projection's apply is a span of its own."""
        if not tracing.enabled():
            return contextlib.nullcontext()
        return tracing.linked(
            f"project {self.checkpoint}",
            (tracing.context_in(m.data) for m in msgs),
            kind=SpanKind.CONSUMER,
            attributes={
                "milestones.projection": self.checkpoint,
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.projection.stream,
                "messaging.batch.message_count": len(msgs),
            },
        )

    async def apply(self, conn: asyncpg.Connection, msgs: list[Msg]) -> None:
        started = time.perf_counter()
        name = self.checkpoint
        items = [Item.of(m, self.projection.decode) for m in msgs]
        last = items[-1].position
        pending = msgs[-1].metadata.num_pending
        settled: list[tuple[str, Settled]] = []
        async with conn.transaction():
            # Lock the checkpoint row first: fences a stale runner, and serializes with rebuild
            # swaps and replays (which bump parked_epoch when they change the parked set).
            row = await conn.fetchrow(
                f"SELECT position, parked_epoch FROM {db.SCHEMA}.checkpoints "
                "WHERE projection = $1 FOR UPDATE",
                name,
            )
            if row is None:
                raise RuntimeError(f"checkpoint row {name!r} is gone (a rebuild dropped it?)")
            current = row["position"]
            if last <= current:
                self.position = self.state.position = current
                return
            if row["parked_epoch"] != self._epoch:
                await self._load_parked(conn, row["parked_epoch"])
            items = [it for it in items if it.position > current]
            for member, park_name in self.members:
                outcome = await settle(
                    conn,
                    member,
                    self.schema,
                    items,
                    self._blocked[park_name],
                    self._failures,
                    self.park_after,
                    park_name,
                )
                await db.park_many(conn, park_name, [p.row() for p in outcome.parked])
                settled.append((park_name, outcome))
            elapsed = max(time.perf_counter() - started, 1e-6)
            self._rate = (
                0.8 * self._rate + 0.2 * (len(msgs) / elapsed)
                if self._rate
                else len(msgs) / elapsed
            )
            await conn.execute(
                f"UPDATE {db.SCHEMA}.checkpoints "
                "SET position = $2, pending = $3, rate = $4, updated_at = now() "
                "WHERE projection = $1",
                name,
                last,
                pending,
                self._rate,
            )
            await conn.execute("SELECT pg_notify($1, $2)", db.NOTIFY_CHANNEL, f"{name}:{last}")
        self.position = self.state.position = last
        self.state.progressed_at = time.monotonic()
        for key in [k for k in self._failures if k[1] <= last]:
            del self._failures[key]
        for park_name, outcome in settled:
            self._parked(park_name, outcome)
        APPLIED.labels(name).inc(settled[0][1].applied if settled else 0)
        POSITION.labels(name).set(last)
        LAG.labels(name).set(pending)

    def _parked(self, park_name: str, outcome: Settled) -> None:
        """Take what a committed batch parked into the runner's view, and say so."""
        self._blocked[park_name] = outcome.blocked
        if not outcome.parked:
            return
        self._parked_now[park_name] += len(outcome.parked)
        PARKED.labels(park_name).inc(len(outcome.parked))
        PARKED_NOW.labels(park_name).set(self._parked_now[park_name])
        behind = [p for p in outcome.parked if p.behind is not None]
        for p in outcome.parked:
            if p.behind is None:
                self.log.error(
                    "event parked",
                    parked_as=park_name,
                    position=p.item.position,
                    subject=p.item.subject,
                    error=p.error,
                )
        if behind:
            self.log.warning(
                "events parked behind an earlier parked event of their project",
                parked_as=park_name,
                count=len(behind),
                projects=sorted({p.item.project or "" for p in behind}),
            )


def _buffered(sub: Subscription, limit: int) -> list[Msg]:
    """Up to ``limit`` messages nats-py has already buffered, without a task per message.

    Why not a subscription callback: with a callback, nats-py answers the server's flow control
    as soon as messages *arrive* in its buffer, so a database slower than the stream let the
    buffer (and the RSS of a rebuild) grow with the stream. Without one it answers only once
    messages have *left* the buffer (``_JSI.get_js_delivered``), which bounds memory to the
    server's flow-control window. ``next_msg`` would cost a task, a uuid4 and a timer per
    message, so the rest of a batch is taken here as ``next_msg`` does it (nats-py 2.16)."""
    queue = sub._pending_queue
    out: list[Msg] = []
    while len(out) < limit and not queue.empty():
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        out.append(msg)
    return out


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        conn.terminate()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
