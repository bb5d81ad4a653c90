"""The event log on JetStream: stream setup, aggregate reads and atomic appends.

nats-py 2.16 has neither an atomic-batch publish API (ADR-50) nor batched direct gets
(ADR-31: ``next_by_subj``+``batch``, ``multi_last``). Both are plain headers and JSON requests
on the wire, so this module implements the small pieces itself rather than publishing one
message at a time (which would lose atomicity) or creating a consumer per aggregate load
(which costs several round trips and server state per load).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

EVENTS_STREAM = "MILESTONES"
EVENTS_SUBJECTS = ["milestones.events.*", "milestones.events.*.*", "milestones.ids.*"]
INBOX_STREAM = "MILESTONES_INBOX"
INBOX_SUBJECTS = ["milestones.inbox.>", "milestones.schedules.>"]  # schedules: deadline timers (ADR-51)
REJECTIONS_STREAM = "MILESTONES_REJECTIONS"
REJECTIONS_SUBJECTS = ["milestones.rejections.>"]

MIN_SERVER = (2, 12, 0)  # atomic batch publish
MAX_BATCH_MESSAGES = 1000  # server limit per atomic batch (ADR-50)
_MULTI_LAST_CHUNK = 512
_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQ = {10071, 10164}


class StartupError(Exception):
    """The server or the stream is not what the services need. The message is one clear line."""


class AppendConflict(Exception):
    """An expected last subject sequence did not hold: someone else wrote first."""


class AppendFailed(Exception):
    """The batch was refused (or its outcome is unknown, e.g. a timeout)."""


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


def check_server_version(nc: NATS) -> None:
    v = nc.connected_server_version
    have = (v.major, v.minor, v.patch)
    if have < MIN_SERVER:
        want = ".".join(map(str, MIN_SERVER))
        raise StartupError(
            f"nats-server {v.major}.{v.minor}.{v.patch} at {nc.connected_url.netloc if nc.connected_url else '?'}"
            f" is too old: Milestones needs {want}+ for atomic batch publish "
            "(run `milestones dev`, which starts a bundled 2.15 server)"
        )


def events_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        description="Milestones event log: the only source of truth",
        subjects=EVENTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
    )


def inbox_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=INBOX_STREAM,
        description="Messages published to milestones.inbox.<Type>, kept until the intake acks them",
        subjects=INBOX_SUBJECTS,
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        # The server refuses message schedules with discard "new". No limits are set on this
        # stream, so nothing is ever discarded either way; whoever adds limits must choose.
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        allow_msg_schedules=True,
    )


def rejections_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=REJECTIONS_STREAM,
        description="Inbox messages the intake refused, with the reason",
        subjects=REJECTIONS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        deny_delete=True,
        allow_direct=True,
    )


# Fields whose drift changes semantics; a mismatch stops the service with one line.
_CHECKED = ("subjects", "storage", "retention", "deny_delete", "deny_purge", "allow_atomic", "allow_direct",
            "allow_msg_schedules")


async def ensure_stream(nc: NATS, want: StreamConfig) -> None:
    js = nc.jetstream()
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        return
    have = info.config
    # Additive upgrades of a stream an earlier version created: new subjects, message schedules.
    missing = set(want.subjects or []) - set(have.subjects or [])
    schedules = bool(want.allow_msg_schedules) and not have.allow_msg_schedules
    if (missing or schedules) and set(have.subjects or []) <= set(want.subjects or []):
        have.subjects = sorted({*(have.subjects or []), *missing})
        have.allow_msg_schedules = bool(want.allow_msg_schedules or have.allow_msg_schedules)
        if have.allow_msg_schedules:
            have.discard = DiscardPolicy.OLD  # required by schedules (see inbox_stream_config)
        have = (await js.update_stream(have)).config
    for field in _CHECKED:
        wanted, got = getattr(want, field), getattr(have, field)
        if wanted is None:
            continue
        if field == "subjects":
            wanted, got = sorted(wanted), sorted(got or [])
        if isinstance(wanted, bool):
            got = bool(got)
        if wanted != got:
            raise StartupError(
                f"stream {want.name} exists with {field}={got!r} but Milestones needs {wanted!r}: "
                "fix the stream (nats stream edit) or point MILESTONES_NATS_URL at another server"
            )


async def direct_batch(nc: NATS, stream: str, request: dict, timeout: float = 5.0) -> list[StoredMessage]:
    """One batched direct get (ADR-31): the server streams messages to our inbox, then EOB.

    Collected by a subscription callback rather than ``next_msg``: nats-py's ``next_msg`` costs
    a task, a uuid4 and a timer per message, which made this read ~half of every commit round
    (profiled: 9.8 ms for ~230 subjects)."""
    loop = asyncio.get_running_loop()
    out: list[StoredMessage] = []
    done: asyncio.Future[None] = loop.create_future()

    async def on_message(msg) -> None:
        if done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status in ("404", "204"):  # nothing there / end of batch
            done.set_result(None)
        elif status:
            done.set_exception(AppendFailed(f"direct get on {stream} failed: {status} {headers.get('Description', '')}"))
        else:
            out.append(StoredMessage(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data))

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


class EventLog:
    """Reads and appends on the MILESTONES stream."""

    def __init__(self, nc: NATS, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def _direct_batch(self, request: dict) -> list[StoredMessage]:
        return await direct_batch(self.nc, EVENTS_STREAM, request, self.timeout)

    async def read_subject(self, subject: str, after: int = 0, page: int = 1000) -> list[StoredMessage]:
        """Every message on one subject with a sequence above ``after``, in order."""
        out: list[StoredMessage] = []
        start = after + 1
        while True:
            got = await self._direct_batch({"seq": start, "next_by_subj": subject, "batch": page})
            out.extend(got)
            if len(got) < page:
                return out
            start = got[-1].seq + 1

    async def last_of(self, subjects: Sequence[str]) -> dict[str, StoredMessage]:
        """The last message of each subject that has one (subjects may hold wildcards)."""
        # The server answers 413 Too Many Results when one request matches more than its limit
        # of subjects, counted after wildcards expand: plain subjects go in chunks, each
        # wildcard (one project's milestones) in a request of its own.
        plain = [s for s in subjects if "*" not in s and ">" not in s]
        wild = [s for s in subjects if "*" in s or ">" in s]
        chunks = [plain[i : i + _MULTI_LAST_CHUNK] for i in range(0, len(plain), _MULTI_LAST_CHUNK)]
        chunks += [[w] for w in wild]
        results = await asyncio.gather(
            *(self._direct_batch({"multi_last": list(c), "batch": 100_000}) for c in chunks)
        )
        return {m.subject: m for batch in results for m in batch}

    async def append(self, messages: Sequence[OutgoingMessage]) -> int:
        """Append atomically (all or none); returns the sequence of the last message.

        Raises ``AppendConflict`` when an expected last subject sequence does not hold,
        ``AppendFailed`` otherwise (including a timeout, whose outcome is unknown: callers
        retry, and receipts make the retry safe).
        """
        if not 0 < len(messages) <= MAX_BATCH_MESSAGES:
            raise ValueError(f"a batch holds 1..{MAX_BATCH_MESSAGES} messages, got {len(messages)}")
        batch_id = uuid.uuid4().hex
        last = len(messages)
        for i, m in enumerate(messages, 1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            if m.expected_last_seq is not None:
                headers[_EXPECTED] = str(m.expected_last_seq)
            if i < last:
                await self.nc.publish(m.subject, m.data, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            try:
                reply = await self.nc.request(m.subject, m.data, headers=headers, timeout=self.timeout)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                raise AppendFailed(f"no answer to the batch commit: {exc!r}") from exc
            ack = msgspec.json.decode(reply.data)
            error = ack.get("error")
            if error:
                if error.get("err_code") in _WRONG_LAST_SEQ:
                    raise AppendConflict(error.get("description", "wrong last sequence"))
                raise AppendFailed(f"batch refused: {error.get('description')} ({error.get('err_code')})")
            if ack.get("count") != last:
                raise AppendFailed(f"batch acknowledged {ack.get('count')} of {last} messages")
            return int(ack["seq"])
        raise AssertionError("unreachable")

    async def last_sequence(self) -> int:
        info = await self.nc.jetstream().stream_info(EVENTS_STREAM)
        return info.state.last_seq
