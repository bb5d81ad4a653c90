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
import bisect
import contextlib
import time
from collections.abc import Sequence
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
from prometheus_client import Counter

from events import tracing
from projections import db, nats_headers
from projections.base import Projection, R
from projections.lane import LAG, PARKED_NOW, Decoded, Lane
from projections.parking import EventFailed, blame, described

log = structlog.get_logger("milestones.projections")

RESTARTS = Counter(
    "milestones_projection_restarts_total", "Runner restarts after a failure", ["projection"]
)
__all__ = ["LAG", "PARKED_NOW", "Runner", "RunnerState", "groups", "take_batch"]

MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
IDLE_TICK = 1.0  # a whole tick without a message: caught up, as far as the server says
IDLE_PING_TICKS = 5  # and every 5 idle ticks the database is asked whether it is still there
LANE_BACKLOG = 2  # batches a lane may be behind the read (``Runner._lanes_apart``)
CONNECT_TIMEOUT = 10.0


@dataclass
class RunnerState:
    running: bool = False  # the supervising loop is alive (False only after stop)
    active: bool = False  # holds its read models' advisory locks (False: standby or down)
    restarts: int = 0
    last_error: str | None = None
    progressed_at: float = 0.0  # monotonic time of the last applied batch, or of the last
    # moment it knew it was caught up
    position: int = 0  # the lowest checkpoint of its read models
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
    """Reads one stream and subject once and applies each batch to its read models (lanes).

    ``projection`` is one read model, or several of the same stream and subject: the live
    service runs status, history and audit as one runner, so the log is read and decoded once
    for all three, and each keeps its own checkpoint, committed in its own transaction. The
    read starts after the lowest checkpoint; a lane skips what it has already applied."""

    projection: Projection[R] | Sequence[Projection[R]]
    dsn: str
    nc: NATS
    schema: str = db.SCHEMA
    checkpoint: str = ""  # the row in milestones.checkpoints of a single read model (its name
    # by default); a runner of several uses each one's name
    batch_size: int = 2000
    park_after: int = 3  # unknown failures of one event before it is parked
    park_suffix: str = ""  # parked rows go to "<member name><suffix>" ("@rebuild")
    batch_timeout: float = 60.0  # one batch's transaction; beyond it the connection is dropped
    state: RunnerState = field(default_factory=RunnerState)

    def __post_init__(self) -> None:
        nats_headers.install()  # every event read carries a header block (its module says why)
        models: list[Projection[Any]] = (
            list(self.projection) if isinstance(self.projection, Sequence) else [self.projection]
        )
        first = models[0]
        if any((p.stream, p.subject) != (first.stream, first.subject) for p in models):
            raise ValueError("one runner reads one stream and subject")
        if len(models) > 1 and self.checkpoint:
            raise ValueError("a runner of several read models keeps each one's own checkpoint")
        self.stream, self.subject = first.stream, first.subject
        self.lanes = [
            Lane(
                p,
                self.checkpoint or p.name,
                self.schema,
                park_suffix=self.park_suffix,
                park_after=self.park_after,
            )
            for p in models
        ]
        self.checkpoint = "+".join(lane.checkpoint for lane in self.lanes)
        self.log = log.bind(projection=self.checkpoint)

    @property
    def position(self) -> int:
        """The lowest checkpoint of its read models: everything up to it is applied to all."""
        return min(lane.position for lane in self.lanes)

    # -- supervision -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, restarting after any failure. Waits as standby while another
        process holds one of its read models' locks."""
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
        for lane in self.lanes:
            RESTARTS.labels(lane.checkpoint).inc()
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
        """One life: connect, take the locks, consume until stop or a failure."""
        conn = await db.connect(self.dsn, self._search_path, timeout=CONNECT_TIMEOUT)
        try:
            if not await self._acquire(conn, stop):
                return
            self.state.active, self.state.standby = True, False
            # a stall counts from when it took over, not from when the process started
            self.state.progressed_at = time.monotonic()
            self.log.info("active", position=await self._read_checkpoints(conn))
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
        for lane in self.lanes:  # the read starts after the lowest checkpoint; for a lane
            # ahead of it, positions stand in for a count (the stream holds other subjects too)
            LAG.labels(lane.checkpoint).set(max(behind - (lane.position - self.position), 0))
        return behind

    @property
    def _search_path(self) -> str:
        return self.schema if self.schema == db.SCHEMA else f"{self.schema}, {db.SCHEMA}"

    async def _acquire(self, conn: asyncpg.Connection, stop: asyncio.Event) -> bool:
        """Each read model's advisory lock, in a fixed order (two runners of the same read models
        never hold one each and wait for the other's); False when stopped while waiting."""
        for lane in self.lanes:
            key = db.lock_key(lane.checkpoint)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                continue
            self.state.standby = True
            self.log.info("standby: another process holds this projection", held=lane.checkpoint)
            lock = asyncio.ensure_future(conn.execute("SELECT pg_advisory_lock($1)", key))
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({lock, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if lock not in done:
                lock.cancel()
                return False
            stopped.cancel()
            lock.result()
        return True

    async def _read_checkpoints(self, conn: asyncpg.Connection) -> int:
        for lane in self.lanes:
            await lane.read_checkpoint(conn)
        self.state.position = self.position
        return self.position

    # -- the loop --------------------------------------------------------------------------------
    async def consume(
        self, conn: asyncpg.Connection, stop: asyncio.Event, catch_up: bool = False
    ) -> int:
        """Apply events from the lowest checkpoint+1 until ``stop``; with ``catch_up``, return as
        soon as nothing is pending (the end of the stream as it was when the last batch was
        read)."""
        start = await self._read_checkpoints(conn)
        # the parked set as it is now: ``parked_now`` is right from the start, not after a batch
        for lane in self.lanes:
            await lane.load_parked(conn, await lane.parked_epoch(conn))
        sub = await self.nc.jetstream().subscribe(
            self.subject,
            stream=self.stream,
            ordered_consumer=True,
            idle_heartbeat=2.0,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start + 1
            ),
        )
        # The read runs ahead by one batch: batch n+1 is taken and decoded while batch n's
        # transaction waits on PostgreSQL, so the decode (Python) and the row writes (the
        # database, on another core) overlap (py-spy: the runner waited on PostgreSQL for about
        # a third of a rebuild). Memory stays bounded: one batch applied, one decoded in hand,
        # one being read, and flow control answered as messages leave nats-py's buffer.
        ahead: asyncio.Queue[Decoded] = asyncio.Queue(maxsize=1)
        reader = asyncio.ensure_future(self._read_ahead(sub, ahead))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        getter: asyncio.Future[Decoded] | None = None
        pending = 1
        try:
            if catch_up:  # a rebuild needs to know where the log ends: here a failure is fatal
                pending = await self._behind(sub)
            else:  # the live runner only sets its lag gauge: a slow JetStream API must not
                with contextlib.suppress(Exception):  # fail (and restart) the runner
                    await self._behind(sub)
            if len(self.lanes) > 1 and not catch_up:
                await self._lanes_apart(conn, ahead, reader, stopped, stop)
                return self.position
            idle = 0
            while not stop.is_set() and pending:
                getter = getter or asyncio.ensure_future(ahead.get())
                done, _ = await asyncio.wait(
                    {getter, stopped, reader},
                    timeout=IDLE_TICK,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getter in done:
                    batch = getter.result()
                    getter = None
                    await self._apply_retrying([(lane, conn) for lane in self.lanes], batch, stop)
                    if catch_up:
                        pending = batch.msgs[-1].metadata.num_pending
                elif reader in done:
                    reader.result()  # the read failed: raise it (the reader never ends else)
                elif done:
                    break  # stopped
                else:
                    await self._idle(conn, idle := idle + 1)
                    continue
                idle = 0
        finally:
            for task in (getter, reader, stopped):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # raised: see above
                await reader
            with contextlib.suppress(Exception):  # the connection may be gone: nothing to undo
                await sub.unsubscribe()
        return self.position

    async def _lanes_apart(
        self,
        conn: asyncpg.Connection,
        ahead: asyncio.Queue[Decoded],
        reader: asyncio.Future[None],
        stopped: asyncio.Future[Any],
        stop: asyncio.Event,
    ) -> None:
        """The live loop of several read models: each lane applies the batches on a connection
        of its own, at its own pace, up to ``LANE_BACKLOG`` batches behind the read.

        Applied in turn (status, then history, then audit, each batch), an event's status row
        waited for the previous batch's history and audit transactions, a dozen round trips to
        PostgreSQL each: under the benchmark's freshness load the process sat idle 57 % of the
        time (py-spy --idle) while events waited. Each lane keeps its own checkpoint, so nothing
        orders the lanes; status, which people read first, no longer waits for the others. The
        read waits for the slowest lane (memory stays bounded), ``conn`` keeps the locks and
        checks the database while all is quiet. A lane that fails for the infrastructure fails
        the runner (it restarts from the checkpoints); one event's own failure is retried and
        parked by that lane alone."""
        feeds: list[asyncio.Queue[Decoded]] = [
            asyncio.Queue(maxsize=LANE_BACKLOG) for _ in self.lanes
        ]
        moved = asyncio.Event()  # a lane finished a batch: there may be room for the next
        busy: set[str] = set()
        conns: list[asyncpg.Connection] = []
        workers: list[asyncio.Future[None]] = []
        stopped_cleanly = False  # else (a failure) the lanes are cancelled, not awaited
        try:
            for lane, feed in zip(self.lanes, feeds, strict=True):
                conns.append(await db.connect(self.dsn, self._search_path, timeout=CONNECT_TIMEOUT))
                applying = self._lane(lane, conns[-1], feed, busy, moved, stop)
                workers.append(asyncio.ensure_future(applying))
            await self._dispatch(conn, ahead, feeds, moved, busy, {reader, stopped, *workers})
            stopped_cleanly = True
        finally:
            if not stopped_cleanly:
                for worker in workers:
                    worker.cancel()
            # stopped: each lane finishes the batch in hand and ends
            await asyncio.gather(*workers, return_exceptions=True)
            for extra in conns:
                await _close(extra)

    async def _dispatch(
        self,
        conn: asyncpg.Connection,
        ahead: asyncio.Queue[Decoded],
        feeds: list[asyncio.Queue[Decoded]],
        moved: asyncio.Event,
        busy: set[str],
        ends: set[asyncio.Future[Any]],
    ) -> None:
        """Hand each batch read to every lane once each has room; return when one of ``ends``
        (the reader, the stop, a lane) is done, raising what it raised."""
        idle = 0
        while True:
            room = all(not feed.full() for feed in feeds)
            moved.clear()
            wanted: asyncio.Future[Any] = asyncio.ensure_future(
                ahead.get() if room else moved.wait()
            )
            done, _ = await asyncio.wait(
                {wanted, *ends}, timeout=IDLE_TICK, return_when=asyncio.FIRST_COMPLETED
            )
            if wanted not in done:
                wanted.cancel()  # (a batch already taken is not lost: ``get`` was not done)
            elif room:
                for feed in feeds:
                    feed.put_nowait(wanted.result())  # room was checked: no lane is full
            if ended := done & ends:
                for end in ended:
                    end.result()  # the reader or a lane failed: raise it
                return  # stopped (a lane ends without failing only on stop)
            if done:
                idle = 0
            elif not busy and all(feed.empty() for feed in feeds):
                await self._idle(conn, idle := idle + 1)

    async def _lane(
        self,
        lane: Lane,
        conn: asyncpg.Connection,
        feed: asyncio.Queue[Decoded],
        busy: set[str],
        moved: asyncio.Event,
        stop: asyncio.Event,
    ) -> None:
        """One lane of ``_lanes_apart``: its batches, in order, until ``stop``."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                got = asyncio.ensure_future(feed.get())
                await asyncio.wait({got, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    got.cancel()
                    return
                busy.add(lane.checkpoint)
                try:
                    await self._apply_retrying([(lane, conn)], got.result(), stop)
                finally:
                    busy.discard(lane.checkpoint)
                moved.set()
        finally:
            stopped.cancel()

    async def _read_ahead(
        self, sub: JetStreamContext.PushSubscription, ahead: asyncio.Queue[Decoded]
    ) -> None:
        """Batches as they arrive, decoded for every lane, one at a time into ``ahead``."""
        decoders = list(dict.fromkeys(m.decode for lane in self.lanes for m, _ in lane.members))
        while True:
            msgs = await take_batch(self.nc, sub, await sub.next_msg(timeout=None), self.batch_size)
            batch = Decoded(msgs)
            for decode in decoders:
                batch.items(decode)
            await ahead.put(batch)

    async def _idle(self, conn: asyncpg.Connection, ticks: int) -> None:
        """Nothing arrived for a tick: caught up, as far as the server says. The connection is
        checked meanwhile, so that a database that went away while all was quiet is noticed now
        (and said in the state), not at the next event."""
        if conn.is_closed():
            raise asyncpg.ConnectionDoesNotExistError("the database connection was lost while idle")
        if ticks % IDLE_PING_TICKS == 0:  # the ping reads what a replay may have changed
            for lane in self.lanes:
                if (epoch := await lane.parked_epoch(conn)) != lane.epoch:
                    await lane.load_parked(conn, epoch)
        self.state.progressed_at = time.monotonic()
        for lane in self.lanes:  # a whole tick and nothing delivered: caught up
            LAG.labels(lane.checkpoint).set(0)

    async def _apply_retrying(
        self,
        lanes: Sequence[tuple[Lane, asyncpg.Connection]],
        batch: Decoded,
        stop: asyncio.Event,
    ) -> None:
        """Apply a batch to ``lanes`` (each on its connection); an event that failed for an
        unknown reason is tried again (after a pause) until ``park_after`` failures park it.
        Infrastructure failures raise. A lane that committed the batch before another lane
        failed skips it when it is tried again."""
        pause = MIN_BACKOFF
        msgs = batch.msgs
        # behind each checkpoint: this batch and what came after its last event
        after = msgs[-1].metadata.num_pending or 0
        positions = batch.positions  # increasing: the read is ordered
        for lane, _ in lanes:  # (nats-py's ``metadata`` per message here was 11 % of a rebuild)
            mine = len(positions) - bisect.bisect_right(positions, lane.position)
            LAG.labels(lane.checkpoint).set(mine + after)
        while True:
            try:
                async with asyncio.timeout(self.batch_timeout):
                    await self.apply(lanes, batch)
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

    def _traced(self, lane: Lane, msgs: Sequence[Msg]):  # -> a context manager
        """A span per batch and read model, linked to the traces its events carry (tracing on
        only): an event is applied once per read model, so each apply is a span of its own."""
        if not tracing.enabled():
            return contextlib.nullcontext()
        return tracing.linked(
            f"project {lane.checkpoint}",
            (tracing.context_in(m.data) for m in msgs),
            kind=SpanKind.CONSUMER,
            attributes={
                "milestones.projection": lane.checkpoint,
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.stream,
                "messaging.batch.message_count": len(msgs),
            },
        )

    async def apply(self, lanes: Sequence[tuple[Lane, asyncpg.Connection]], batch: Decoded) -> None:
        """The batch to each of ``lanes`` in turn, each in its own transaction on its
        connection; decoded once for lanes that decode alike."""
        msgs = batch.msgs
        for lane, conn in lanes:
            with self._traced(lane, msgs):
                await lane.apply(conn, batch)
        self.state.position = self.position
        self.state.progressed_at = time.monotonic()


def groups(projections: Sequence[Projection[R]]) -> list[list[Projection[R]]]:
    """Projections grouped by what they read, so each group can be rebuilt with one read."""
    by_source: dict[tuple[str, str], list[Projection[R]]] = {}
    for p in projections:
        by_source.setdefault((p.stream, p.subject), []).append(p)
    return list(by_source.values())


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


async def take_batch(
    nc: NATS, sub: JetStreamContext.PushSubscription, first: Msg, limit: int
) -> list[Msg]:
    """``first`` and up to ``limit - 1`` more that nats-py has buffered, with the server's flow
    control answered as soon as they have left the buffer (the runner's read; the benchmark's
    ceiling of a rebuild reads the same way)."""
    batch = [first, *_buffered(sub, limit - 1)]
    await _answer_flow_control(nc, sub)
    return batch


async def _answer_flow_control(nc: NATS, sub: JetStreamContext.PushSubscription) -> None:
    """Answer the server's flow control once what it asks about has left nats-py's buffer.

    nats-py 2.16 answers it in ``next_msg`` (only when the buffer is empty right then) or from a
    task that looks every 0.25 s; a batch taken with ``_buffered`` empties the buffer after
    ``next_msg`` looked, so each flow-control window waited up to 250 ms and the read ran at a
    third of its speed (measured by the benchmark's runner-shaped read). This is that task's
    check, made as soon as a batch is taken, so the server sends the next window while the
    batch is written. Memory stays bounded: the answer still comes only once the window has
    left the buffer."""
    jsi = sub._sub._jsi if sub._sub is not None else None
    if jsi is None or not jsi._fcr or jsi.get_js_delivered() < jsi._fcd:
        return
    reply, jsi._fcr, jsi._fcd = jsi._fcr, None, 0
    await nc.publish(reply)


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
