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

from events import Reply, decode_stored, event_of
from events.subjects import RECEIPTS_PREFIX
from services import domain
from services.eventlog.log import (
    MAX_BATCH_MESSAGES,
    AppendConflict,
    AppendFailed,
    EventLog,
    StoredMessage,
)
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
        self._cache: OrderedDict[str, Cached] = OrderedDict()
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
        """One group commit; returns the units for the next round."""
        units = [u for u in units if not u.future.done()]
        plan = plan_round(units, self._cache)
        to_read = plan.to_read
        answers = await self.log.last_of(to_read) if to_read else {}
        last, subjects = complete_read(plan, answers, self._cache)
        unreadable = await self._refresh(subjects, last)
        outcome = decide_round(
            units, plan, last, unreadable, self._cache, self.clock(), self.max_messages
        )
        self._settle(outcome)
        if not outcome.batch.messages:
            return outcome.deferred
        return await self._append(outcome, last) + outcome.deferred

    def _settle(self, outcome: RoundOutcome[_Unit]) -> None:
        """Answer what the round settled without appending; mark what must be verified."""
        for unit, exc in outcome.crashed:
            log.error("decide failed", ce_ids=[c.ce.id for c in unit.commands], exc_info=exc)
        for unit, reply in outcome.answered:
            unit.future.set_result(reply)
        for unit in outcome.verify:
            unit.verify = True

    async def _append(
        self, outcome: RoundOutcome[_Unit], last: dict[str, StoredMessage]
    ) -> list[_Unit]:
        """Append the round's batch and answer its units; returns those to try again."""
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

        await asyncio.gather(*(refresh(s) for s in subjects if not s.startswith(RECEIPTS_PREFIX)))
        return unreadable


__all__ = ["Command", "Committer"]
