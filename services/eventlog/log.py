"""The event log on JetStream: aggregate reads (batched direct gets) and atomic appends.

nats-py 2.16 has neither an atomic-batch publish API (ADR-50) nor batched direct gets
(ADR-31: ``next_by_subj``+``batch``, ``multi_last``). Both are plain headers and JSON requests
on the wire, so this module implements the small pieces itself rather than publishing one
message at a time (which would lose atomicity) or creating a consumer per aggregate load
(which costs several round trips and server state per load).

Reads in a cluster (README "Reliability"). Direct gets are answered by any replica of the
stream, and the server routes a request to a replica on the server the client is connected to
first: a follower, which applies what the leader committed a moment later. Appends stay
correct anyway (every append states the aggregate's last sequence: a stale read fails the OCC
check), but a stale read would cost a conflict and a retry, and a history read that missed the
aggregate's last events while its last sequence came from a current replica would decide on a
state the log no longer has. So an ``EventLog`` reads its own writes: it remembers the last
sequence it appended and the last sequence it saw of each subject, and a direct get answered
by a replica behind either is asked again (the replica catches up within milliseconds) until a
deadline, after which the read fails as ``unavailable``. ``allow_direct`` stays on (batched
reads exist only as direct gets: the leader-only ``STREAM.MSG.GET`` returns one message a
request), and ``mirror_direct`` stays off (a mirror is not covered by this check).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
import nats
from nats.aio.client import Client as NATS

from events.subjects import EVENTS_STREAM

MAX_BATCH_MESSAGES = 1000  # server limit per atomic batch (ADR-50)
_MULTI_LAST_CHUNK = 512
_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQ = {10071, 10164}
_STALE_READ_DEADLINE = 5.0  # seconds a lagging replica may take before a read gives up
_KNOWN_SUBJECTS = 100_000  # subjects whose last sequence a log remembers (read-your-writes)
# JetStream's storage or the stream's limits are full (discard "new" refuses the write):
# insufficient resources (the server's max_file_store), the account's storage limit, and the
# store's own refusals ("maximum messages/bytes exceeded", "no space left on device").
_STORAGE_FULL_CODES = {10023, 10047}
_STREAM_FULL = ("maximum messages", "maximum bytes", "maximum messages per subject")


class AppendConflict(Exception):
    """An expected last subject sequence did not hold: someone else wrote first."""


class AppendFailed(Exception):
    """The batch was refused (or its outcome is unknown, e.g. a timeout)."""


class StorageFull(AppendFailed):
    """JetStream's storage or the stream's limits are full: the whole batch was refused."""


class StaleReplica(AppendFailed):
    """Every answer came from a replica still behind what this process wrote or read."""


def storage_full(description: str, code: int | None, stream: str) -> StorageFull | None:
    """The refusal of a full store, worded for whoever must act on it; None for other errors."""
    text = (description or "").lower()
    if code in _STORAGE_FULL_CODES:
        what = (
            "JetStream's storage on the NATS server is used up (its max_file_store, or the "
            "account's storage limit)"
        )
        fix = (
            "free disk space or raise max_file_store in the nats-server configuration "
            "(a config reload is enough)"
        )
    elif "no space left" in text:
        what = "the NATS server's disk is full"
        fix = "free disk space and restart that nats-server (JetStream stops on a full disk)"
    elif code == 10077 and any(t in text for t in _STREAM_FULL):
        what = f"stream {stream}: {description}"
        fix = (
            f"the log keeps every event: remove the limit (nats stream edit {stream} with "
            "max_msgs, max_bytes and max_msgs_per_subject -1)"
        )
    else:
        return None
    return StorageFull(
        f"the event log's storage is full ({what}): nothing was written; {fix}, then send the "
        "message again (its id makes the retry safe)"
    )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    subject: str
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    subject: str
    data: bytes
    expected_last_seq: int | None = None  # set on the first message per subject in a batch


async def direct_batch(
    nc: NATS, stream: str, request: dict, timeout: float = 5.0, eob: dict | None = None
) -> list[StoredMessage]:
    """One batched direct get (ADR-31): the server streams messages to our inbox, then EOB.

    Collected by a subscription callback rather than ``next_msg``: nats-py's ``next_msg`` costs
    a task, a uuid4 and a timer per message, which made this read ~half of every commit round
    (profiled: 9.8 ms for ~230 subjects). ``eob`` receives the end-of-batch headers (a multi-last
    read's ``Nats-UpTo-Sequence`` is the answering replica's last sequence)."""
    loop = asyncio.get_running_loop()
    out: list[StoredMessage] = []
    done: asyncio.Future[None] = loop.create_future()

    async def on_message(msg) -> None:
        if done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status in ("404", "204"):  # nothing there / end of batch
            if eob is not None:
                eob.update(headers)
            done.set_result(None)
        elif status == "503":
            done.set_exception(
                AppendFailed(
                    f"no replica of stream {stream} answered a read (no leader right now, e.g. "
                    "an election after a NATS node was lost, JetStream is down, or the stream "
                    "has no direct gets)"
                )
            )
        elif status:
            done.set_exception(
                AppendFailed(
                    f"direct get on {stream} failed: {status} {headers.get('Description', '')}"
                )
            )
        else:
            out.append(
                StoredMessage(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data)
            )

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_message)
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        return out
    finally:
        await sub.unsubscribe()


async def publish_batch(
    nc: NATS, messages: Sequence[tuple[str, bytes, dict[str, str] | None]], timeout: float
) -> dict:
    """Publish (subject, data, headers) messages as one atomic batch (ADR-50: all or none) and
    return the server's decoded ack (``seq``, ``count``, or ``error``). nats-py 2.16 has no
    batch publish: each message is published with the batch's id and sequence, the last as a
    request with the commit header. ``NoRespondersError`` and ``TimeoutError`` pass through
    (``EventLog.append`` and the deadline scheduler each say what they mean for them)."""
    if not 0 < len(messages) <= MAX_BATCH_MESSAGES:
        raise ValueError(f"a batch holds 1..{MAX_BATCH_MESSAGES} messages, got {len(messages)}")
    batch_id = uuid.uuid4().hex
    last = len(messages)
    for i, (subject, data, own) in enumerate(messages, 1):
        headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
        if own:
            headers.update(own)
        if i < last:
            await nc.publish(subject, data, headers=headers)
            continue
        headers["Nats-Batch-Commit"] = "1"
        reply = await nc.request(subject, data, headers=headers, timeout=timeout)
        return msgspec.json.decode(reply.data)
    raise AssertionError("unreachable")


class EventLog:
    """Reads and appends on the MILESTONES stream; reads see this log's own writes (above)."""

    def __init__(
        self, nc: NATS, *, timeout: float = 5.0, stale_deadline: float = _STALE_READ_DEADLINE
    ) -> None:
        self.nc = nc
        self.timeout = timeout
        self.stale_deadline = stale_deadline
        self.written = 0  # the last sequence this log appended (acknowledged)
        self._known: OrderedDict[str, int] = OrderedDict()  # subject -> last sequence seen
        self.stale_reads = 0  # answers from a lagging replica, asked again (a gauge of lag)

    def _saw(self, subject: str, seq: int) -> None:
        if self._known.get(subject, 0) < seq:
            self._known[subject] = seq
        self._known.move_to_end(subject)
        while len(self._known) > _KNOWN_SUBJECTS:
            self._known.popitem(last=False)

    async def _consistent(
        self,
        read: Callable[[], Awaitable[list[StoredMessage]]],
        behind: Callable[[list[StoredMessage]], str | None],
    ) -> list[StoredMessage]:
        """``read`` asked again (1 ms, doubling to 50 ms) while ``behind`` says the replica that
        answered lags what this log wrote or saw; ``StaleReplica`` after ``stale_deadline``."""
        deadline = time.monotonic() + self.stale_deadline
        pause = 0.001
        while True:
            got = await read()
            lag = behind(got)
            if not lag:
                for m in got:
                    self._saw(m.subject, m.seq)
                return got
            self.stale_reads += 1
            if time.monotonic() > deadline:
                raise StaleReplica(
                    f"the replica of {EVENTS_STREAM} that answers reads is behind ({lag}) for "
                    f"{self.stale_deadline:g} s: is the cluster healthy? nothing was written"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def read_subject(
        self, subject: str, after: int = 0, page: int = 1000
    ) -> list[StoredMessage]:
        """Every message on one subject with a sequence above ``after``, in order (asked again
        while the answer ends before the subject's last message as this log has seen it)."""
        known = self._known.get(subject, 0)

        async def every_page() -> list[StoredMessage]:
            out: list[StoredMessage] = []
            start = after + 1
            while True:
                request = {"seq": start, "next_by_subj": subject, "batch": page}
                got = await direct_batch(self.nc, EVENTS_STREAM, request, self.timeout)
                out.extend(got)
                if len(got) < page:
                    return out
                start = got[-1].seq + 1

        def behind(got: list[StoredMessage]) -> str | None:
            last = got[-1].seq if got else after
            return f"{subject} at {last}, seen at {known}" if last < known else None

        return await self._consistent(every_page, behind)

    async def last_of(self, subjects: Sequence[str]) -> dict[str, StoredMessage]:
        """The last message of each subject that has one (subjects may hold wildcards)."""
        # The server answers 413 Too Many Results when one request matches more than its limit
        # of subjects, counted after wildcards expand: plain subjects go in chunks, each
        # wildcard (one project's milestones) in a request of its own.
        plain = [s for s in subjects if "*" not in s and ">" not in s]
        wild = [s for s in subjects if "*" in s or ">" in s]
        chunks = [plain[i : i + _MULTI_LAST_CHUNK] for i in range(0, len(plain), _MULTI_LAST_CHUNK)]
        chunks += [[w] for w in wild]
        results = await asyncio.gather(*(self._last_of_chunk(c) for c in chunks))
        return {m.subject: m for batch in results for m in batch}

    async def _last_of_chunk(self, subjects: list[str]) -> list[StoredMessage]:
        written = self.written
        expected = {s: self._known[s] for s in subjects if s in self._known}

        eob: dict = {}  # the end-of-batch headers of the latest answer

        async def read() -> list[StoredMessage]:
            eob.clear()
            request = {"multi_last": subjects, "batch": 100_000}
            return await direct_batch(self.nc, EVENTS_STREAM, request, self.timeout, eob)

        def behind(got: list[StoredMessage]) -> str | None:
            upto = eob.get("Nats-UpTo-Sequence")
            if upto is not None and int(upto) < written:
                return f"at {upto}, this process wrote {written}"
            seen = {m.subject: m.seq for m in got}
            for subject, seq in expected.items():
                if seen.get(subject, 0) < seq:
                    return f"{subject} at {seen.get(subject, 0)}, seen at {seq}"
            return None

        return await self._consistent(read, behind)

    async def append(self, messages: Sequence[OutgoingMessage]) -> int:
        """Append atomically (all or none); returns the sequence of the last message.

        Raises ``AppendConflict`` when an expected last subject sequence does not hold,
        ``AppendFailed`` otherwise (including a timeout, whose outcome is unknown: callers
        retry, and receipts make the retry safe).
        """
        last = len(messages)
        batch = [
            (
                m.subject,
                m.data,
                None if m.expected_last_seq is None else {_EXPECTED: str(m.expected_last_seq)},
            )
            for m in messages
        ]
        try:
            ack = await publish_batch(self.nc, batch, self.timeout)
        except nats.errors.NoRespondersError as exc:
            raise AppendFailed(
                f"the event log took nothing: stream {EVENTS_STREAM} has no leader right now "
                "(an election after a NATS node was lost, or JetStream is down); send the "
                "message again (its id makes the retry safe)"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise AppendFailed(
                f"the event log did not answer the append within {self.timeout:g} s (it may "
                "or may not be written); send the message again (its id makes the retry safe)"
            ) from exc
        error = ack.get("error")
        if error:
            if error.get("err_code") in _WRONG_LAST_SEQ:
                raise AppendConflict(error.get("description", "wrong last sequence"))
            full = storage_full(error.get("description", ""), error.get("err_code"), EVENTS_STREAM)
            if full is not None:
                raise full
            raise AppendFailed(
                f"batch refused: {error.get('description')} ({error.get('err_code')})"
            )
        if ack.get("count") != last:
            raise AppendFailed(f"batch acknowledged {ack.get('count')} of {last} messages")
        seq = int(ack["seq"])
        self.written = max(self.written, seq)
        for offset, sent in enumerate(reversed(messages)):
            self._saw(sent.subject, seq - offset)
        return seq

    async def last_sequence(self) -> int:
        info = await self.nc.jetstream().stream_info(EVENTS_STREAM)
        return info.state.last_seq
