"""One read model's share of a runner: its checkpoint row, what it holds back, its failures, and
the transaction that applies a batch to it.

A runner reads the log once and hands each batch to its lanes in turn (``projections.runner``):
the live service runs status, history and audit as three lanes of one reader, each with its own
checkpoint committed in its own transaction, so one read model's failure or lag never moves
another's checkpoint. A rebuild runs one lane (``rebuild.Together`` for several read models
rebuilt into one shadow checkpoint).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge

from projections import db
from projections.base import Projection
from projections.parking import Item, Settled, held_back, position_of, settle

log = structlog.get_logger("milestones.projections")

APPLIED = Counter("milestones_projection_events_total", "Events applied", ["projection"])
PARKED = Counter("milestones_projection_parked_total", "Events parked", ["projection"])
PARKED_NOW = Gauge("milestones_projection_parked_now", "Events parked now", ["projection"])
POSITION = Gauge("milestones_projection_position", "Checkpoint", ["projection"])
LAG = Gauge(
    "milestones_projection_lag",
    "Events in the stream after the checkpoint (0 when caught up)",
    ["projection"],
)
DB_TIMEOUT = 10.0


class Decoded:
    """A batch's messages as items, decoded once per decode function: the lanes of a runner
    (and the members of a ``Together``) share the work when they decode alike."""

    def __init__(self, msgs: Sequence[Msg]) -> None:
        self.msgs = msgs
        self._by: dict[Callable[[bytes], Any], list[Item]] = {}

    @functools.cached_property
    def positions(self) -> list[int]:
        """Each message's stream position, in order (from items already made, if any)."""
        for items in self._by.values():
            return [it.position for it in items]
        return [position_of(m) for m in self.msgs]

    def items(self, decode: Callable[[bytes], Any]) -> list[Item]:
        found = self._by.get(decode)
        if found is None:
            found = self._by[decode] = [Item.of(m, decode) for m in self.msgs]
        return found


@dataclass
class Lane:
    projection: Projection[Any]
    checkpoint: str  # its row in milestones.checkpoints
    schema: str = db.SCHEMA
    park_suffix: str = ""  # parked rows go to "<member name><suffix>" ("@rebuild")
    park_after: int = 3  # unknown failures of one event before it is parked
    position: int = 0
    _rate: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.log = log.bind(projection=self.checkpoint)
        # several read models rebuilt together (``rebuild.Together``) park each on its own
        members: list[Projection[Any]] = getattr(self.projection, "members", [self.projection])
        if self.park_suffix or len(members) > 1:
            self.members = [(m, f"{m.name}{self.park_suffix}") for m in members]
        else:
            self.members = [(self.projection, self.checkpoint)]
        self.blocked: dict[str, dict[str, int]] = {name: {} for _, name in self.members}
        self.parked_now: dict[str, int] = {name: 0 for _, name in self.members}
        self.epoch: int | None = None
        self.failures: dict[tuple[str, int], int] = {}

    async def read_checkpoint(self, conn: asyncpg.Connection) -> int:
        await conn.execute(
            f"INSERT INTO {db.SCHEMA}.checkpoints (projection) VALUES ($1) ON CONFLICT DO NOTHING",
            self.checkpoint,
        )
        self.position = await conn.fetchval(
            f"SELECT position FROM {db.SCHEMA}.checkpoints WHERE projection = $1", self.checkpoint
        )
        return self.position

    async def load_parked(self, conn: asyncpg.Connection, epoch: int) -> None:
        """What is held back (per member), as the parked table says now."""
        for _, name in self.members:
            self.blocked[name], self.parked_now[name] = await held_back(conn, name)
            PARKED_NOW.labels(name).set(self.parked_now[name])
        self.epoch = epoch

    async def parked_epoch(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval(
            f"SELECT parked_epoch FROM {db.SCHEMA}.checkpoints WHERE projection = $1",
            self.checkpoint,
            timeout=DB_TIMEOUT,
        )

    async def apply(self, conn: asyncpg.Connection, batch: Decoded) -> bool:
        """Apply what of ``batch`` lies past this lane's checkpoint, with the checkpoint, in one
        transaction. False when the checkpoint was already past the batch (nothing done)."""
        started = time.perf_counter()
        name, msgs = self.checkpoint, batch.msgs
        last = msgs[-1].metadata.sequence.stream
        pending = msgs[-1].metadata.num_pending
        settled: list[tuple[str, Settled]] = []
        try:
            applied = await self._transaction(conn, batch, settled, started, last, pending)
        except BaseException:
            self._ended("rolled_back")
            raise
        self._ended("committed")
        if not applied:
            return False
        self.position = last
        for key in [k for k in self.failures if k[1] <= last]:
            del self.failures[key]
        for park_name, outcome in settled:
            self._parked(park_name, outcome)
        APPLIED.labels(name).inc(settled[0][1].applied if settled else 0)
        POSITION.labels(name).set(last)
        LAG.labels(name).set(pending)
        return True

    def _ended(self, how: str) -> None:
        """Tell the read models that keep state of their own across batches (a rebuild's held
        status rows: ``base``'s optional members) how the transaction ended."""
        for member, _ in self.members:
            if (hook := getattr(member, how, None)) is not None:
                hook()

    async def _transaction(
        self,
        conn: asyncpg.Connection,
        batch: Decoded,
        settled: list[tuple[str, Settled]],
        started: float,
        last: int,
        pending: int | None,
    ) -> bool:
        name = self.checkpoint
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
                self.position = current
                return False
            if row["parked_epoch"] != self.epoch:
                await self.load_parked(conn, row["parked_epoch"])
            for member, park_name in self.members:
                items = batch.items(member.decode)
                if items and items[0].position <= current:  # else: all of them (most batches)
                    items = [it for it in items if it.position > current]
                outcome = await settle(
                    conn,
                    member,
                    self.schema,
                    items,
                    self.blocked[park_name],
                    self.failures,
                    self.park_after,
                    park_name,
                )
                await db.park_many(conn, park_name, [p.row() for p in outcome.parked])
                settled.append((park_name, outcome))
            elapsed = max(time.perf_counter() - started, 1e-6)
            rate = len(batch.msgs) / elapsed
            self._rate = 0.8 * self._rate + 0.2 * rate if self._rate else rate
            # the checkpoint and its notice in one round trip (the row is locked above, so the
            # update always finds it and the notice always goes, at commit)
            await conn.execute(
                f"WITH moved AS (UPDATE {db.SCHEMA}.checkpoints "
                "SET position = $2, pending = $3, rate = $4, updated_at = now() "
                "WHERE projection = $1 RETURNING projection) "
                "SELECT pg_notify($5, $6) FROM moved",
                name,
                last,
                pending,
                self._rate,
                db.NOTIFY_CHANNEL,
                f"{name}:{last}",
            )
        return True

    def _parked(self, park_name: str, outcome: Settled) -> None:
        """Take what a committed batch parked into the lane's view, and say so."""
        self.blocked[park_name] = outcome.blocked
        if not outcome.parked:
            return
        self.parked_now[park_name] += len(outcome.parked)
        PARKED.labels(park_name).inc(len(outcome.parked))
        PARKED_NOW.labels(park_name).set(self.parked_now[park_name])
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
