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

Rounds are pipelined: the next round is read, decided and sent while the last one waits for its
fsync, and two rounds in flight share no project and no receipt (``_run`` says why that is safe).

What to read, how to decide and what to answer is pure (``services.intake.round``); this module
is the shell around it: the writer loop, the state cache, the read, the append and the retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from opentelemetry.trace import Span, SpanContext, SpanKind, StatusCode

from events import Reply, decode_stored, event_of, tracing
from events.subjects import EVENTS_STREAM, RECEIPTS_PREFIX
from services import domain
from services.eventlog.log import (
    MAX_BATCH_MESSAGES,
    AppendConflict,
    AppendFailed,
    EventLog,
    StoredMessage,
)
from services.intake import observe
from services.intake.pipeline import free_of, round_keys, unit_keys
from services.intake.round import (
    Cached,
    Command,
    RoundOutcome,
    cache_updates,
    complete_read,
    decide_round,
    plan_round,
    receipt_subject,
    replies,
)

log = structlog.get_logger("milestones.committer")


@dataclass(slots=True)
class _Unit:
    commands: list[Command]
    future: asyncio.Future[Reply]
    attempts: int = 0
    receipts: list[str] = field(default_factory=list)
    # read receipts and every subject before deciding (after a failed fast round)
    verify: bool = False
    keys: frozenset[str] = frozenset()  # projects and receipts it may touch (pipelining)
    spans: list[SpanContext] = field(default_factory=list)  # its commands' (tracing on)
    plans: list[domain.Plan] | None = None  # per command (``round.plans_of``), made once


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
        depth: int = 2,
    ) -> None:
        self.log = log_
        self.max_attempts = max_attempts
        self.max_messages = max_messages
        self.cache_size = cache_size
        self.clock = clock
        self.depth = depth  # rounds in flight at once (1: each round waits for the last)
        self._cache: OrderedDict[str, Cached] = OrderedDict()
        self._queue: asyncio.Queue[_Unit] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._flying: dict[asyncio.Task[list[_Unit]], tuple[frozenset[str], list[_Unit]]] = {}
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
        for task, (_keys, units) in list(self._flying.items()):
            task.cancel()
            for unit in units:
                if not unit.future.done():  # the append's outcome is unknown: a retry is safe
                    unit.future.set_result(
                        Reply.fail("unavailable", "the intake is shutting down: retry")
                    )
        self._flying.clear()
        while not self._queue.empty():
            unit = self._queue.get_nowait()
            if not unit.future.done():
                unit.future.set_result(
                    Reply.fail("unavailable", "the intake is shutting down: retry")
                )

    async def submit(self, commands: Sequence[Command]) -> Reply:
        """Decide and append ``commands`` as one unit: all accepted, or none."""
        if (call := observe.CALL.get()) is not None:
            call.commands = commands  # the entry point's refusal line names the CloudEvents too
        spans = observe.command_spans(commands) if tracing.enabled() else []
        if spans:
            commands = [observe.stamped(c, s) for c, s in zip(commands, spans, strict=True)]
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        receipts = [receipt_subject(c.ce) for c in commands]
        plans = [domain.plan(c.fact) for c in commands]
        unit = _Unit(
            list(commands),
            future,
            receipts=receipts,
            keys=unit_keys(commands, receipts, plans),
            plans=plans,
        )
        unit.spans = [s.get_span_context() for s in spans]
        if len(spans) == 1 and call is not None:  # a refusal's line leads to the command's span
            call.span = unit.spans[0]
        reply: Reply | None = None
        observe.IN_FLIGHT.inc(len(commands))
        try:
            await self._queue.put(unit)
            reply = await future
        finally:
            observe.IN_FLIGHT.dec(len(commands))
            if spans:
                observe.verdict(spans, reply or observe.GONE)
        return reply

    # -- the writer loop -------------------------------------------------------------------
    async def _run(self) -> None:
        """Rounds overlap: while one round's append waits for its fsync, the next is read,
        decided and sent (``depth`` rounds in flight at most).

        Two rounds in flight never share a project or a receipt (``round.free_of``), so they
        commute: neither was decided on a state the other changes, and whichever the stream
        commits first, the log is a serial history. A unit that shares one with a round in
        flight waits for that round's answer and is then decided on what it wrote; if the
        round failed, on a fresh read. It is never appended on a guess about a round that may
        still fail. The cache learns a round's states only from its acknowledgement."""
        pending: list[_Unit] = []
        arrival: asyncio.Task[_Unit] | None = None
        try:
            while True:
                while not self._queue.empty():
                    pending.append(self._queue.get_nowait())
                held = frozenset().union(*(keys for keys, _ in self._flying.values()))
                free, waiting = free_of(pending, held, _keys_of)
                if free and len(self._flying) < self.depth:
                    pending = await self._start_round(free) + waiting
                    continue
                if arrival is None:
                    arrival = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait(
                    {arrival, *self._flying}, return_when=asyncio.FIRST_COMPLETED
                )
                if arrival in done:
                    pending.append(arrival.result())
                    arrival = None
                retry: list[_Unit] = []
                for task in [t for t in self._flying if t.done()]:
                    del self._flying[task]
                    retry += task.result()
                await self._back_off(retry)
                pending = retry + pending
        finally:
            if arrival is not None:
                arrival.cancel()

    async def _start_round(self, units: list[_Unit]) -> list[_Unit]:
        """Read and decide ``units``, answer what needs no append, and send the batch as a round
        in flight; returns the units for a later round."""
        span = _round_span(units)
        try:
            outcome, last = await self._decide(units)
        except Exception as exc:  # the server went away mid-read: retry with backoff
            log.warning("commit round failed", error=repr(exc), units=len(units))
            _ended(span, exc)
            retry = self._count_attempt(units, "unavailable", f"event log unavailable: {exc}")
            await self._back_off(retry)
            return retry
        self._settle(outcome)
        if outcome.batch.messages:
            accepted = [unit for unit, _ in outcome.accepted]
            span.set_attribute("messaging.batch.message_count", len(outcome.batch.messages))
            task = asyncio.create_task(self._append(outcome, last, span), name="commit-round")
            self._flying[task] = (round_keys(outcome, _keys_of), accepted)
        else:
            _ended(span)
        return outcome.deferred

    async def _back_off(self, retry: list[_Unit]) -> None:
        if retry and any(u.attempts for u in retry):
            await asyncio.sleep(random.uniform(0.005, 0.02) * max(u.attempts for u in retry))

    def _count_attempt(self, units: list[_Unit], code: str, message: str) -> list[_Unit]:
        again = []
        for unit in units:
            unit.attempts += 1
            if unit.attempts >= self.max_attempts:
                unit.future.set_result(Reply.fail(code, message))
            else:
                again.append(unit)
        return again

    async def _decide(
        self, units: list[_Unit]
    ) -> tuple[RoundOutcome[_Unit], dict[str, StoredMessage]]:
        """One round's read and decision (what it appends is sent by ``_append``)."""
        units = [u for u in units if not u.future.done()]
        plan = plan_round(units, self._cache)
        for subject in plan.trusted:
            # most recent now: a round in flight that lands meanwhile may add to the cache and
            # evict the least recent entries, never one this round is about to decide on
            self._cache.move_to_end(subject)
        to_read = plan.to_read
        answers = await self.log.last_of(to_read) if to_read else {}
        last, subjects = complete_read(plan, answers, self._cache)
        unreadable = await self._refresh(subjects, last)
        outcome = decide_round(
            units, plan, last, unreadable, self._cache, self.clock(), self.max_messages
        )
        return outcome, last

    def _settle(self, outcome: RoundOutcome[_Unit]) -> None:
        """Answer what the round settled without appending; mark what must be verified."""
        for unit, exc in outcome.crashed:  # (another task: the caller's log fields are not here)
            log.error("decide failed", **observe.about(unit.commands), exc_info=exc)
        for unit, reply in outcome.answered:
            unit.future.set_result(reply)
        for unit in outcome.verify:
            unit.verify = True

    async def _append(
        self, outcome: RoundOutcome[_Unit], last: dict[str, StoredMessage], span: Span
    ) -> list[_Unit]:
        """Append the round's batch and answer its units; returns those to try again."""
        try:
            again = await self._appended(outcome, last)
        except BaseException as exc:
            _ended(span, exc)
            raise
        if again:  # a conflict or a failed append: they go into a later round
            span.set_attribute("milestones.round.units_again", len(again))
        _ended(span)
        return again

    async def _appended(
        self, outcome: RoundOutcome[_Unit], last: dict[str, StoredMessage]
    ) -> list[_Unit]:
        accepted = [unit for unit, _ in outcome.accepted]
        messages = outcome.batch.messages
        try:
            last_seq = await self.log.append(messages)
        except AppendConflict as exc:
            log.info("append conflict, deciding again", units=len(accepted), reason=str(exc))
            for unit in accepted:  # decide again on a full read
                unit.verify = True
            return self._count_attempt(
                accepted,
                "conflict",
                (
                    "the milestone kept changing while this message was decided; "
                    f"gave up after {self.max_attempts} attempts: send it again"
                ),
            )
        except AppendFailed as exc:
            log.warning("append failed", units=len(accepted), reason=str(exc))
            return self._count_attempt(accepted, "unavailable", str(exc))
        except Exception as exc:  # the server went away mid-append: the outcome is unknown
            log.warning("commit round failed", error=repr(exc), units=len(accepted))
            return self._count_attempt(accepted, "unavailable", f"event log unavailable: {exc}")
        for subject, entry in cache_updates(messages, last_seq, outcome.working):
            self._remember(subject, entry)
        answers = replies(outcome.accepted, last_seq, len(messages), last)
        for unit, reply in zip(accepted, answers, strict=True):
            unit.future.set_result(reply)
        return []

    # -- aggregate state cache ------------------------------------------------------------
    def _remember(self, subject: str, entry: Cached) -> None:
        self._cache[subject] = entry
        self._cache.move_to_end(subject)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _refresh(self, subjects: set[str], last: dict[str, StoredMessage]) -> dict[str, str]:
        """Bring cached states up to ``last``; returns the subjects whose history cannot be read.
        Most subjects are current in the cache already: those are settled here, and only the
        others are read (concurrently), rather than a task per subject of the round."""
        unreadable: dict[str, str] = {}

        async def load(subject: str, cached: Cached | None, latest: int) -> None:
            base = cached if cached is not None and cached.seq < latest else None
            state = base.state if base else domain.initial_state(subject)
            async with self._load_limit:
                messages = await self.log.read_subject(subject, after=base.seq if base else 0)
            try:
                for m in messages:
                    state = domain.evolve(state, event_of(decode_stored(m.data)))
            except (ValueError, TypeError) as exc:  # msgspec errors, UnknownSchemaVersion
                log.error("aggregate history unreadable", subject=subject, error=str(exc))
                unreadable[subject] = (
                    f"the history of {subject} holds an event this version cannot read ({exc}): "
                    "upgrade the intake or add an upcaster; nothing was written"
                )
                self._cache.pop(subject, None)
                return
            self._remember(subject, Cached(state, messages[-1].seq if messages else latest))

        loads = []
        for subject in subjects:
            if subject.startswith(RECEIPTS_PREFIX):
                continue
            latest = last[subject].seq if subject in last else 0
            cached = self._cache.get(subject)
            if cached is not None and cached.seq == latest:
                self._cache.move_to_end(subject)
            elif latest == 0:
                self._cache.pop(subject, None)
            else:
                loads.append(load(subject, cached, latest))
        if loads:
            await asyncio.gather(*loads)
        return unreadable


def _keys_of(unit: _Unit) -> frozenset[str]:
    return unit.keys


def _round_span(units: list[_Unit]) -> Span:
    """A commit round: its own trace, linked to the commands it carries (tracing on only)."""
    if not tracing.enabled():
        return tracing.INVALID_SPAN
    return tracing.start(
        f"send {EVENTS_STREAM}",
        None,
        kind=SpanKind.PRODUCER,
        links=tracing.links_to(c for u in units for c in u.spans),
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": EVENTS_STREAM,
            "milestones.round.units": len(units),
        },
    )


def _ended(span: Span, error: BaseException | None = None) -> None:
    if isinstance(error, BaseException):
        span.set_status(StatusCode.ERROR, repr(error))
    span.end()


__all__ = ["Command", "Committer"]
