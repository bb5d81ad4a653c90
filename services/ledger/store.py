"""The ledger's I/O on JetStream: reading the event log in stream order (an ordered consumer over
every subject of MILESTONES) and reading and appending the checkpoints of
MILESTONES_CHECKPOINTS. Needs the services' own identity: nobody else may read the streams raw.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from events.subjects import CHECKPOINTS_STREAM, CHECKPOINTS_SUBJECT, EVENTS_STREAM
from services.eventlog.log import StoredMessage, direct_batch
from services.ledger.note import RECORD_DECODER, CheckpointRecord

_WRONG_LAST_SEQ = 10071  # JetStream: "wrong last sequence"
_PAGE = 32  # checkpoint messages per direct get (each up to ~350 KiB)


class CheckpointConflict(Exception):
    """Another writer appended a checkpoint first (the expected last sequence did not hold)."""


class LogStalled(Exception):
    """The log stopped delivering before the position it was asked to reach."""


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    seq: int  # the message's sequence in MILESTONES_CHECKPOINTS
    record: CheckpointRecord


async def last_sequence(nc: NATS, stream: str = EVENTS_STREAM) -> int:
    info = await nc.jetstream().stream_info(stream)
    return info.state.last_seq


def _decode(messages: list[StoredMessage]) -> list[StoredCheckpoint]:
    out = []
    for m in messages:
        try:
            out.append(StoredCheckpoint(m.seq, RECORD_DECODER.decode(m.data)))
        except msgspec.DecodeError:
            # kept as an unreadable record: the verifier reports it rather than skipping it
            out.append(StoredCheckpoint(m.seq, CheckpointRecord(note="", leaves=b"", frontier=[])))
    return out


async def read_checkpoints(nc: NATS, after: int = 0) -> list[StoredCheckpoint]:
    """Every checkpoint message with a sequence above ``after``, in order."""
    last = await last_sequence(nc, CHECKPOINTS_STREAM)
    out: list[StoredCheckpoint] = []
    start = after + 1
    while start <= last:
        got = await direct_batch(nc, CHECKPOINTS_STREAM, {"seq": start, "batch": _PAGE}, 10.0)
        if not got:
            break
        out.extend(_decode(got))
        start = got[-1].seq + 1
    return out


async def last_checkpoint(nc: NATS) -> StoredCheckpoint | None:
    last = await last_sequence(nc, CHECKPOINTS_STREAM)
    if last == 0:
        return None
    got = await direct_batch(nc, CHECKPOINTS_STREAM, {"seq": last, "batch": 1}, 10.0)
    return _decode(got)[0] if got else None


async def append_checkpoint(nc: NATS, data: bytes, expected_last_seq: int) -> int:
    """Append one checkpoint only if the stream still ends at ``expected_last_seq``: of two
    writers, one wins and the other learns it (``CheckpointConflict``) instead of forking."""
    try:
        ack = await nc.jetstream().publish(
            CHECKPOINTS_SUBJECT,
            data,
            stream=CHECKPOINTS_STREAM,
            headers={"Nats-Expected-Last-Sequence": str(expected_last_seq)},
            timeout=10.0,
        )
    except nats.js.errors.APIError as exc:
        if exc.err_code == _WRONG_LAST_SEQ:
            raise CheckpointConflict(str(exc.description)) from exc
        raise
    return ack.seq


async def message_at(nc: NATS, position: int) -> StoredMessage | None:
    """One stored message of the log by position (a direct get)."""
    got = await direct_batch(nc, EVENTS_STREAM, {"seq": position, "batch": 1}, 10.0)
    return got[0] if got and got[0].seq == position else None


class LogReader:
    """An ordered consumer over every message of MILESTONES from ``start``, read in batches.

    Read without a callback, like the projection runner, so that nats-py answers the server's
    flow control only once messages have left its buffer: a slow reader (an HTTP client
    downloading an export) holds the server back instead of buffering the whole log."""

    def __init__(self, nc: NATS, start: int = 1, batch: int = 2000) -> None:
        self.nc = nc
        self.start = start
        self.batch = batch
        self._sub: Subscription | None = None

    async def __aenter__(self) -> LogReader:
        self._sub = await self.nc.jetstream().subscribe(
            "",  # no filter: every subject (events, receipts, credentials) is a leaf
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            idle_heartbeat=2.0,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.start
            ),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - closing: the connection may be gone
                pass

    async def next_batch(self, timeout: float | None) -> list[StoredMessage]:
        """The next message and whatever is already buffered behind it; ``[]`` on timeout."""
        assert self._sub is not None, "use LogReader as an async context manager"
        try:
            first = await self._sub.next_msg(timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return [_stored(m) for m in [first, *_buffered(self._sub, self.batch - 1)]]

    async def until(self, end: int, stall: float = 15.0) -> AsyncGenerator[list[StoredMessage]]:
        """Batches up to and including position ``end``."""
        seen = self.start - 1
        while seen < end:
            batch = await self.next_batch(stall)
            if not batch:
                raise LogStalled(f"the log stopped delivering after position {seen} (of {end})")
            batch = [m for m in batch if m.seq <= end]
            if batch:
                seen = batch[-1].seq
                yield batch
            else:
                return


def _stored(msg: Msg) -> StoredMessage:
    # The stream sequence straight from the ack subject: nats-py's ``msg.metadata`` builds four
    # objects per message, a quarter of the time of reading the log. The subject is
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>, or
    # with <domain>.<account hash> after ACK and a token at the end (ADR-15).
    tokens = msg.reply.split(".")
    return StoredMessage(int(tokens[5] if len(tokens) == 9 else tokens[7]), msg.subject, msg.data)


def _buffered(sub: Subscription, limit: int) -> list[Msg]:
    """Up to ``limit`` messages nats-py has already buffered, taken as ``next_msg`` takes them
    (nats-py 2.16) but without a task and a timer per message; see projections.runner."""
    queue = sub._pending_queue
    out: list[Msg] = []
    while len(out) < limit and not queue.empty():
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        out.append(msg)
    return out


async def read_log(nc: NATS, end: int | None = None) -> AsyncGenerator[list[StoredMessage]]:
    """Every message of the log from position 1 to ``end`` (default: the last one now)."""
    end = await last_sequence(nc) if end is None else end
    if end == 0:
        return
    async with LogReader(nc, 1) as reader:
        async for batch in reader.until(end):
            yield batch
