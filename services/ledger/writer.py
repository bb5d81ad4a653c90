"""The checkpoint writer: follows MILESTONES and signs a checkpoint of the tree at least every
``every_s`` seconds while events arrive (none while nothing changes), into
MILESTONES_CHECKPOINTS.

Restart is O(log n): each checkpoint record carries the tree's frontier, so the writer resumes
from the last checkpoint without hashing the log again. Before it signs anything it makes sure
it extends that checkpoint on the log as it is now:

- the last checkpoint verifies with this writer's key, and its frontier gives its signed root;
- the stream still holds every position up to it (nothing deleted, nothing missing at the front,
  not shorter), and the positions that checkpoint added still hash to the leaf hashes it
  recorded (the full recomputation is ``audit verify``'s job);
- every new checkpoint is consistent with the previous one: a consistency proof is built from
  the old frontier and the new leaves and checked (RFC 9162 §2.1.4.2) before signing.

If any of these fails the log was tampered with (or the key replaced): the writer logs it as an
error, sets ``halted`` and the ``milestones_ledger_halted`` gauge, and signs nothing more, since
"a log MUST NOT sign any checkpoint which is inconsistent with any checkpoint it previously
signed" (c2sp.org/tlog-checkpoint). Two writers at once cannot fork the checkpoints either: each
append states the checkpoint stream's expected last sequence.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client as NATS
from prometheus_client import Counter, Gauge

from events.subjects import EVENTS_STREAM
from services.eventlog.log import StoredMessage
from services.ledger import store
from services.ledger.keys import SigningKey
from services.ledger.merkle import (
    Frontier,
    FrontierRange,
    consistency_proof,
    leaf_hash,
    verify_consistency,
)
from services.ledger.note import MAX_LEAVES, Checkpoint, NoteError, open_note, record, utc_time

log = structlog.get_logger("milestones.ledger")

SIGNED = Counter("milestones_ledger_checkpoints_total", "Checkpoints signed")
SIZE = Gauge("milestones_ledger_checkpoint_size", "Tree size of the last signed checkpoint")
HALTED = Gauge("milestones_ledger_halted", "1 when signing stopped because the log was tampered")


class Tampering(Exception):
    """The log (or the last checkpoint) is not what the last signed checkpoint commits to."""


@dataclass
class _Signed:
    """The last checkpoint: the tree the next one must extend."""

    seq: int = 0  # its message's sequence in MILESTONES_CHECKPOINTS (0: none yet)
    checkpoint: Checkpoint | None = None
    frontier: Frontier = field(default_factory=Frontier)
    added: list[bytes] = field(default_factory=list)  # the leaf hashes it recorded


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CheckpointWriter:
    def __init__(
        self,
        nc: NATS,
        key: SigningKey,
        origin: str,
        every_s: float = 2.0,
        *,
        max_leaves: int = MAX_LEAVES,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.nc = nc
        self.key = key
        self.origin = origin
        self.every_s = every_s
        self.max_leaves = max_leaves
        self.clock = clock
        self.halted: str | None = None  # why signing stopped, for readiness and logs
        self.size = 0  # the last signed tree size

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._follow(stop)
                return
            except Tampering as exc:
                self.halted = str(exc)
                HALTED.set(1)
                log.error(
                    "LOG TAMPERING DETECTED: checkpoint signing stopped",
                    reason=str(exc),
                    fix="run `milestones audit verify` to find the first bad position",
                )
                return
            except store.CheckpointConflict:
                log.warning("another writer signed a checkpoint first: continuing from it")
            except Exception as exc:  # NATS away, a timeout: retry from the last checkpoint
                log.warning("checkpoint writer restarts", error=repr(exc), in_seconds=backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 30.0)

    # -- resume -----------------------------------------------------------------------------------
    async def _resume(self) -> _Signed:
        stored = await store.last_checkpoint(self.nc)
        signed = _Signed()
        if stored is not None:
            try:
                cp = open_note(stored.record.note, self.key.public, self.origin)
                frontier = Frontier(cp.size, stored.record.frontier)
            except (NoteError, ValueError) as exc:
                raise Tampering(
                    f"the last checkpoint (message {stored.seq}) does not verify with this "
                    f"writer's key {self.key.public.key_id} and origin {self.origin!r}: {exc}"
                ) from exc
            if frontier.root() != cp.root:
                raise Tampering(
                    f"the last checkpoint's frontier does not give its root ({cp.size})"
                )
            signed = _Signed(stored.seq, cp, frontier, stored.record.leaf_hashes())
        state = (await self.nc.jetstream().stream_info(EVENTS_STREAM)).state
        size = signed.frontier.size
        if state.num_deleted or (state.last_seq and state.first_seq != 1):
            raise Tampering(
                f"messages were removed from {EVENTS_STREAM} (first position {state.first_seq}, "
                f"{state.num_deleted or 0} deleted)"
            )
        if state.last_seq < size:
            raise Tampering(
                f"{EVENTS_STREAM} ends at position {state.last_seq} but the last checkpoint "
                f"covers 1..{size}"
            )
        self.size = size
        return signed

    # -- follow and sign --------------------------------------------------------------------------
    async def _follow(self, stop: asyncio.Event) -> None:
        signed = await self._resume()
        recheck_from = signed.frontier.size - len(signed.added) + 1
        expected = recheck_from
        pending: list[bytes] = []
        last_signed = float("-inf")
        async with store.LogReader(self.nc, recheck_from) as reader:
            while not stop.is_set():
                wait = None if not pending else max(0.0, last_signed + self.every_s - _mono())
                batch = await _next_or_stop(reader, stop, wait)
                if batch is None:  # stopping: sign what was read, so a restart has less to do
                    if pending:
                        await self._sign(signed, pending)
                    return
                for m in batch:
                    if m.seq != expected:
                        raise Tampering(f"position {expected} is missing: the log jumps to {m.seq}")
                    expected += 1
                    if m.seq <= signed.frontier.size:
                        _recheck(signed, m)
                        continue
                    pending.append(leaf_hash(m.data))
                    if len(pending) >= self.max_leaves:
                        signed = await self._sign(signed, pending)
                        pending, last_signed = [], _mono()
                if pending and _mono() - last_signed >= self.every_s:
                    signed = await self._sign(signed, pending)
                    pending, last_signed = [], _mono()

    async def _sign(self, signed: _Signed, added: list[bytes]) -> _Signed:
        tree = signed.frontier.copy()
        tree.extend(added)
        root = tree.root()
        old = signed.checkpoint
        if old is not None:
            proof = consistency_proof(
                old.size, tree.size, FrontierRange(signed.frontier, added).mth
            )
            if not verify_consistency(old.size, tree.size, old.root, root, proof):
                raise Tampering(f"the tree of size {tree.size} is not consistent with {old.size}")
        checkpoint = Checkpoint(self.origin, tree.size, root, utc_time(self.clock()))
        seq = await store.append_checkpoint(
            self.nc, record(checkpoint, self.key, added, tree), signed.seq
        )
        SIGNED.inc()
        SIZE.set(tree.size)
        self.size = tree.size
        log.debug("checkpoint signed", size=tree.size, added=len(added))
        return _Signed(seq, checkpoint, tree, list(added))


def _recheck(signed: _Signed, m: StoredMessage) -> None:
    index = m.seq - (signed.frontier.size - len(signed.added)) - 1
    if leaf_hash(m.data) != signed.added[index]:
        raise Tampering(
            f"position {m.seq} no longer matches the last checkpoint (size {signed.frontier.size})"
        )


def _mono() -> float:
    return time.monotonic()


async def _next_or_stop(
    reader: store.LogReader, stop: asyncio.Event, timeout: float | None
) -> list[StoredMessage] | None:
    """The next batch (``[]`` when ``timeout`` passes first), or None once ``stop`` is set."""
    getter = asyncio.ensure_future(reader.next_batch(timeout))
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        stopped.cancel()
        return getter.result()
    getter.cancel()
    return None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
