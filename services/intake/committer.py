"""Group commit: concurrent messages are decided together and appended in atomic batches.

One writer task per process drains the queue of submitted units (a unit is one CloudEvent, or
a batch that must be accepted whole). Each round:

1. one batched ``multi_last`` read gives, for every subject involved, its last sequence, and
   for every CloudEvent, whether its receipt already exists (a repeat: answer from the receipt);
2. cached aggregate states are checked against those sequences and topped up incrementally;
3. units are decided in arrival order against an in-memory overlay, so several messages for
   one aggregate in one round see each other's effects;
4. receipts and events go out as one atomic batch; the first message per subject carries
   ``Nats-Expected-Last-Subject-Sequence`` (OCC), each receipt expects 0 (at most once).

A conflict (another process wrote first) fails the whole batch; the round is repeated with
fresh state, a bounded number of times, then the units get ``conflict``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from events import (
    ENCODER,
    RECEIPT_DECODER,
    EventRef,
    Receipt,
    Reply,
    StoredEvent,
    decode_stored,
    project_subject,
    stream_subject,
    subjects,
)
from events.common import Event
from events.envelope import CloudEventIn
from events.errors import Rejected
from events.subjects import RECEIPTS_PREFIX
from services import domain
from services.domain import State
from services.eventlog.log import (
    MAX_BATCH_MESSAGES,
    AppendConflict,
    AppendFailed,
    EventLog,
    OutgoingMessage,
    StoredMessage,
)

log = structlog.get_logger("milestones.committer")
_EVENT_ID_NS = uuid.UUID("6f1d3a52-8c1e-4a8e-9a53-2f3d0c1b7e11")


@dataclass(frozen=True, slots=True)
class Command:
    ce: CloudEventIn
    fact: Event


@dataclass(slots=True)
class _Unit:
    commands: list[Command]
    future: asyncio.Future[Reply]
    attempts: int = 0
    receipts: list[str] = field(default_factory=list)
    verify: bool = (
        False  # read receipts and every subject before deciding (after a failed fast round)
    )


_Refs = list[tuple[str, str, str]]  # (event type, event id, subject) per appended event


@dataclass(slots=True)
class _Cached:
    state: State
    seq: int


class _ReadMore(Exception):
    """The unit needs subjects this round did not read: decide it again next round, reading all."""


def receipt_subject(ce: CloudEventIn) -> str:
    """CloudEvents identify an event by source + id; the digest keeps it a valid subject token."""
    digest = hashlib.blake2b(f"{ce.source}\n{ce.id}".encode(), digest_size=16).hexdigest()
    return subjects.receipt_subject(digest)


def event_id(ce: CloudEventIn, index: int) -> str:
    return str(uuid.uuid5(_EVENT_ID_NS, f"{ce.source}\n{ce.id}\n{index}"))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Committer:
    def __init__(
        self,
        log_: EventLog,
        *,
        max_attempts: int = 6,
        max_messages: int = MAX_BATCH_MESSAGES,
        cache_size: int = 100_000,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.log = log_
        self.max_attempts = max_attempts
        self.max_messages = max_messages
        self.cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._queue: asyncio.Queue[_Unit] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._load_limit = asyncio.Semaphore(64)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            unit = self._queue.get_nowait()
            if not unit.future.done():
                unit.future.set_result(
                    Reply.fail("unavailable", "the intake is shutting down: retry")
                )

    async def submit(self, commands: Sequence[Command]) -> Reply:
        """Decide and append ``commands`` as one unit: all accepted, or none."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        unit = _Unit(list(commands), future, receipts=[receipt_subject(c.ce) for c in commands])
        await self._queue.put(unit)
        return await future

    # -- the writer loop -------------------------------------------------------------------
    async def _run(self) -> None:
        pending: list[_Unit] = []
        while True:
            if not pending:
                pending.append(await self._queue.get())
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            units, pending = pending, []
            try:
                retry = await self._round(units)
            except Exception as exc:  # the server went away mid-round: retry with backoff
                log.warning("commit round failed", error=repr(exc), units=len(units))
                retry = self._count_attempt(units, "unavailable", f"event log unavailable: {exc}")
            if retry and any(u.attempts for u in retry):
                await asyncio.sleep(random.uniform(0.005, 0.02) * max(u.attempts for u in retry))
            pending = retry + pending

    def _count_attempt(self, units: list[_Unit], code: str, message: str) -> list[_Unit]:
        again = []
        for unit in units:
            unit.attempts += 1
            if unit.attempts >= self.max_attempts:
                unit.future.set_result(Reply.fail(code, message))
            else:
                again.append(unit)
        return again

    async def _round(self, units: list[_Unit]) -> list[_Unit]:
        units = [u for u in units if not u.future.done()]
        subjects: set[str] = set()
        wildcards: set[str] = set()
        plans: dict[int, list[domain.Plan]] = {}
        for unit in units:
            plans[id(unit)] = [domain.plan(c.fact) for c in unit.commands]
            for p in plans[id(unit)]:
                subjects.add(p.target)
                subjects.update(p.reads)
                if p.all_milestones_of:
                    wildcards.add(f"{project_subject(p.all_milestones_of)}.*")
                elif p.milestones_if_dependent:
                    # only a project with dependencies needs its milestones for a reschedule; a
                    # cached project without any is trusted here and checked after the read
                    owner = self._cache.get(project_subject(p.milestones_if_dependent))
                    if unit.verify or owner is None or getattr(owner.state, "dependencies", None):
                        wildcards.add(f"{project_subject(p.milestones_if_dependent)}.*")
        receipts = {r for u in units for r in u.receipts}
        # Fast path: a subject this process wrote last is in the cache with its sequence, and the
        # append's OCC header checks that sequence anyway; a receipt is appended expecting none.
        # So only what the cache cannot vouch for is read: receipts of units being verified,
        # subjects not cached, subjects a decision reads without writing (no OCC guards those),
        # and wildcards (whose answers win over the cache). A stale guess fails the whole append
        # as a conflict (an attempt), and the next round of its units reads everything. A refusal
        # is only answered after a full read, so that a repeat gets its first answer. Profiled:
        # the read was a third of a round.
        trusted: set[str] = set()
        fast = not any(u.verify for u in units)
        if fast:
            read_only = {s for plan_list in plans.values() for p in plan_list for s in p.reads}
            trusted = {s for s in subjects if s in self._cache and s not in read_only}
            receipts = set()
        to_read = [*receipts, *(subjects - trusted), *wildcards]
        last = await self.log.last_of(to_read) if to_read else {}
        for subject in trusted:  # a wildcard may have read it fresh: then that answer stands
            last.setdefault(subject, StoredMessage(self._cache[subject].seq, subject, b""))
        for subject in list(last):
            if any(subject.startswith(w[:-1]) for w in wildcards):
                subjects.add(subject)
        unreadable = await self._refresh(subjects, last)

        working: dict[str, State] = {}
        outgoing: list[OutgoingMessage] = []
        expected_set: set[str] = set()
        accepted: list[tuple[_Unit, list[_Refs | None]]] = []
        claimed: set[str] = set()
        deferred: list[_Unit] = []
        now = self.clock()

        for unit in units:
            if all(r in last for r in unit.receipts):
                unit.future.set_result(self._answer_from_receipts(unit, last))
                continue
            if claimed.intersection(unit.receipts):
                deferred.append(
                    unit
                )  # the same CloudEvent twice in one round: answer it next round
                continue
            blocked = [
                unreadable[s]
                for p in plans[id(unit)]
                for s in (p.target, *p.reads)
                if s in unreadable
            ]
            if blocked:
                unit.future.set_result(Reply.fail("unavailable", blocked[0]))
                continue
            try:
                unit_msgs, unit_refs, unit_working = self._decide_unit(
                    unit, plans[id(unit)], last, working, now, wildcards
                )
            except _ReadMore:
                unit.verify = True
                deferred.append(unit)
                continue
            except Rejected as rej:
                if fast:  # receipts were not read: a repeat must get its first answer, so verify
                    unit.verify = True
                    deferred.append(unit)
                    continue
                unit.future.set_result(Reply.fail(rej.code, rej.message))
                continue
            except Exception as exc:
                log.exception("decide failed", ce_ids=[c.ce.id for c in unit.commands])
                unit.future.set_result(
                    Reply.fail("internal", f"the intake failed on this message: {exc!r}")
                )
                continue
            if len(outgoing) + len(unit_msgs) > self.max_messages:
                if not outgoing:
                    unit.future.set_result(
                        Reply.fail(
                            "too_large",
                            f"this batch needs {len(unit_msgs)} log messages; "
                            f"at most {self.max_messages} fit in one atomic append: send fewer events",
                        )
                    )
                else:
                    deferred.append(unit)
                continue
            claimed.update(unit.receipts)
            working.update(unit_working)
            for m in unit_msgs:
                if m.subject not in expected_set:
                    expected_set.add(m.subject)
                    seq = last[m.subject].seq if m.subject in last else 0
                    m = OutgoingMessage(m.subject, m.data, seq)
                outgoing.append(m)
            accepted.append((unit, unit_refs))

        if not outgoing:
            return deferred
        try:
            last_seq = await self.log.append(outgoing)
        except AppendConflict as exc:
            log.info("append conflict, deciding again", units=len(accepted), reason=str(exc))
            for unit, _ in accepted:  # decide again on a full read
                unit.verify = True
            return (
                self._count_attempt(
                    [u for u, _ in accepted],
                    "conflict",
                    (
                        "the milestone kept changing while this message was decided; "
                        f"gave up after {self.max_attempts} attempts: send it again"
                    ),
                )
                + deferred
            )
        except AppendFailed as exc:
            log.warning("append failed", units=len(accepted), reason=str(exc))
            return self._count_attempt([u for u, _ in accepted], "unavailable", str(exc)) + deferred

        position = last_seq - len(outgoing) + 1
        written: dict[str, int] = {}
        for m in outgoing:
            written[m.subject] = position
            position += 1
        for subject, seq in written.items():
            if subject in working:
                self._remember(subject, _Cached(working[subject], seq))
        position = last_seq - len(outgoing) + 1
        for unit, refs in accepted:
            events: list[EventRef] = []
            for n, per_command in enumerate(refs):
                if per_command is None:
                    events.extend(self._refs_from_receipt(last[unit.receipts[n]]))
                    continue
                position += 1  # the receipt
                for etype, eid, _subject in per_command:
                    events.append(EventRef(etype, eid, position))
                    position += 1
            unit.future.set_result(Reply.ok(events))
        return deferred

    def _decide_unit(
        self,
        unit: _Unit,
        plans: list[domain.Plan],
        last: dict[str, StoredMessage],
        working: dict[str, State],
        now: dt.datetime,
        wildcards: set[str],
    ) -> tuple[list[OutgoingMessage], list[_Refs | None], dict[str, State]]:
        overlay: dict[str, State] = {}
        msgs: list[OutgoingMessage] = []
        refs: list[_Refs | None] = []

        def state_of(subject: str) -> State:
            if subject in overlay:
                return overlay[subject]
            if subject in working:
                return working[subject]
            cached = self._cache.get(subject)
            return cached.state if cached else domain.initial_state(subject)

        for n, (cmd, plan) in enumerate(zip(unit.commands, plans, strict=True)):
            if unit.receipts[n] in last:
                refs.append(None)  # handled before: answered from its receipt
                continue
            needed = [plan.target, *plan.reads]
            whole = plan.all_milestones_of
            if plan.milestones_if_dependent:
                whole = plan.milestones_if_dependent
                if f"{project_subject(whole)}.*" not in wildcards and getattr(
                    state_of(project_subject(whole)), "dependencies", None
                ):
                    raise _ReadMore()  # dependencies appeared since the cache said none: read them all
            if whole:
                prefix = f"{project_subject(whole)}."
                needed += [
                    s
                    for s in {*last, *working, *overlay}
                    if s.startswith(prefix) and s.count(".") == 3
                ]
            states = {s: state_of(s) for s in needed}
            try:
                traced = domain.decide_traced(domain.stamp(cmd.fact, cmd.ce.time), states)
            except Rejected as rej:
                if len(unit.commands) > 1:
                    raise Rejected(
                        rej.code, f"event #{n + 1} (id {cmd.ce.id}): {rej.message}"
                    ) from rej
                raise
            events = [event for event, _ in traced]
            per_command: list[tuple[str, str, str]] = []
            for i, event in enumerate(events):
                subject = stream_subject(event)
                overlay[subject] = domain.evolve(state_of(subject), event)
                eid = event_id(cmd.ce, i)
                per_command.append((type(event).__name__, eid, subject))
            receipt = Receipt(
                source=cmd.ce.source,
                id=cmd.ce.id,
                type=cmd.ce.type,
                events=[(t, e) for t, e, _ in per_command],
            )
            msgs.append(OutgoingMessage(unit.receipts[n], ENCODER.encode(receipt), 0))
            for (event, cause), (etype, eid, subject) in zip(traced, per_command, strict=True):
                stored = StoredEvent(
                    id=eid,
                    source=cmd.ce.source,
                    type=etype,
                    subject=subject,
                    time=cmd.ce.time,
                    recordedtime=now,
                    correlationid=cmd.ce.correlationid or cmd.ce.id,
                    causationid=cmd.ce.id if cause is None else per_command[cause][1],
                    actor=cmd.ce.actor,
                    data=event,
                )
                msgs.append(OutgoingMessage(subject, ENCODER.encode(stored)))
            refs.append(per_command)
        return msgs, refs, overlay

    @staticmethod
    def _refs_from_receipt(stored: StoredMessage) -> list[EventRef]:
        receipt = RECEIPT_DECODER.decode(stored.data)
        return [
            EventRef(etype, eid, stored.seq + 1 + i)
            for i, (etype, eid) in enumerate(receipt.events)
        ]

    def _answer_from_receipts(self, unit: _Unit, last: dict[str, StoredMessage]) -> Reply:
        return Reply.ok([ref for r in unit.receipts for ref in self._refs_from_receipt(last[r])])

    # -- aggregate state cache ------------------------------------------------------------
    def _remember(self, subject: str, entry: _Cached) -> None:
        self._cache[subject] = entry
        self._cache.move_to_end(subject)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _refresh(self, subjects: set[str], last: dict[str, StoredMessage]) -> dict[str, str]:
        """Bring cached states up to ``last``; returns the subjects whose history cannot be read."""
        unreadable: dict[str, str] = {}

        async def refresh(subject: str) -> None:
            latest = last[subject].seq if subject in last else 0
            cached = self._cache.get(subject)
            if cached is not None and cached.seq == latest:
                self._cache.move_to_end(subject)
                return
            if latest == 0:
                self._cache.pop(subject, None)
                return
            base = cached if cached is not None and cached.seq < latest else None
            state = base.state if base else domain.initial_state(subject)
            async with self._load_limit:
                messages = await self.log.read_subject(subject, after=base.seq if base else 0)
            try:
                for m in messages:
                    state = domain.evolve(state, decode_stored(m.data).data)  # type: ignore[arg-type]
            except (
                ValueError,
                TypeError,
            ) as exc:  # msgspec errors and UnknownSchemaVersion are ValueErrors
                log.error("aggregate history unreadable", subject=subject, error=str(exc))
                unreadable[subject] = (
                    f"the history of {subject} holds an event this version cannot read ({exc}): "
                    "upgrade the intake or add an upcaster; nothing was written"
                )
                self._cache.pop(subject, None)
                return
            self._remember(subject, _Cached(state, messages[-1].seq if messages else latest))

        await asyncio.gather(*(refresh(s) for s in subjects if not s.startswith(RECEIPTS_PREFIX)))
        return unreadable
