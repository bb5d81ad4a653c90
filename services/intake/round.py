"""The commit round's pure core: what a round reads, how decisions become stored envelopes, and
how the append's positions become replies. No I/O, no clock, no random: the committer
(``services.intake.committer``) reads, refreshes its cache, appends and retries; time and ids
arrive here as arguments.

A round, in the shell's order: ``plan_round`` says what to read; ``complete_read`` adds what the
cache vouches for; ``decide_round`` decides the units in arrival order into one atomic batch;
after the append, ``cache_updates`` and ``replies``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

from events import (
    ENCODER,
    RECEIPT_DECODER,
    EventRef,
    Receipt,
    Reply,
    project_subject,
    stream_subject,
    subjects,
)
from events.attributes import Extensions
from events.common import Event
from events.envelope import CloudEventIn
from events.errors import Rejected
from events.subjects import milestones_of
from services import domain
from services.domain import State, Traced
from services.domain.project import Project
from services.eventlog.log import OutgoingMessage, StoredMessage
from services.intake.stored import stored_bytes

_EVENT_ID_NS = uuid.UUID("6f1d3a52-8c1e-4a8e-9a53-2f3d0c1b7e11")


@dataclass(frozen=True, slots=True)
class Command:
    ce: CloudEventIn
    fact: Event
    principal: str  # who sent it, from the transport (services.auth), never from the message
    extensions: Extensions = field(default_factory=dict)  # its other attributes, to store


@dataclass(slots=True)
class Cached:
    state: State
    seq: int  # the subject's last sequence when ``state`` was current


class Pending(Protocol):
    """What a round needs of a submitted unit (one CloudEvent, or a batch accepted whole)."""

    @property
    def commands(self) -> Sequence[Command]: ...

    @property
    def receipts(self) -> Sequence[str]: ...  # ``receipt_subject`` of each command

    @property
    def verify(self) -> bool: ...  # read receipts and every subject before deciding


U = TypeVar("U", bound=Pending)

Ref = tuple[str, str, str]  # (event type, event id, subject) of one appended event
CommandRefs = list[Ref] | None  # None: handled before, answered from its receipt


class ReadMore(Exception):
    """The unit needs subjects this round did not read: decide it again next round, reading all."""


def receipt_subject(ce: CloudEventIn) -> str:
    """CloudEvents identify an event by source + id; the digest keeps it a valid subject token."""
    digest = hashlib.blake2b(f"{ce.source}\n{ce.id}".encode(), digest_size=16).hexdigest()
    return subjects.receipt_subject(digest)


def event_id(ce: CloudEventIn, index: int) -> str:
    """Derived from the CloudEvent, so deciding the same message again gives the same ids."""
    return uuid5_text(_EVENT_ID_PREFIX, f"{ce.source}\n{ce.id}\n{index}")


_EVENT_ID_PREFIX = _EVENT_ID_NS.bytes


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))`` without building a ``UUID`` (RFC 4122
    §4.3: SHA-1 of namespace and name, version 5, the RFC's variant): per event, and
    ``UUID.__init__`` was most of its cost."""
    digest = bytearray(hashlib.sha1(namespace + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def has_dependencies(state: State) -> bool:
    return isinstance(state, Project) and bool(state.dependencies)


# -- what a round reads ----------------------------------------------------------------------------
class RoundPlan(NamedTuple):
    plans: list[list[domain.Plan]]  # per unit, per command
    fast: bool  # no unit is being verified: trust the cache, read no receipts
    receipts: set[str]  # receipts to read
    subjects: set[str]  # every target and read of the units
    wildcards: set[str]  # projects whose milestones are all read (fresh answers win)
    trusted: set[str]  # subjects taken from the cache unread

    @property
    def to_read(self) -> list[str]:
        return [*self.receipts, *(self.subjects - self.trusted), *self.wildcards]


def plan_round(units: Sequence[Pending], cache: Mapping[str, Cached]) -> RoundPlan:
    """What a round reads before deciding ``units``.

    Fast path: a subject this process wrote last is in the cache with its sequence, and the
    append's OCC header checks that sequence anyway; a receipt is appended expecting none. So
    only what the cache cannot vouch for is read: receipts of units being verified, subjects not
    cached, subjects a decision reads without writing (no OCC guards those), and wildcards
    (whose answers win over the cache). A stale guess fails the whole append as a conflict, and
    the next round of its units reads everything. Profiled: the read was a third of a round."""
    plans = [plans_of(unit) for unit in units]
    planned: set[str] = set()
    wildcards: set[str] = set()
    for unit, unit_plans in zip(units, plans, strict=True):
        for p in unit_plans:
            planned.add(p.target)
            planned.update(p.reads)
            wildcard = milestones_to_read(p, unit.verify, cache)
            if wildcard is not None:
                wildcards.add(wildcard)
    if any(u.verify for u in units):
        receipts = {r for u in units for r in u.receipts}
        return RoundPlan(plans, False, receipts, planned, wildcards, set())
    read_only = {s for unit_plans in plans for p in unit_plans for s in p.reads}
    trusted = {s for s in planned if s in cache and s not in read_only}
    return RoundPlan(plans, True, set(), planned, wildcards, trusted)


def plans_of(unit: Pending) -> list[domain.Plan]:
    """A unit's plans, one per command: those it carries (``plans``, made once when it was
    submitted: a plan depends on the command only), else made here."""
    made: list[domain.Plan] | None = getattr(unit, "plans", None)
    return made if made is not None else [domain.plan(c.fact) for c in unit.commands]


def milestones_to_read(plan: domain.Plan, verify: bool, cache: Mapping[str, Cached]) -> str | None:
    """The wildcard over a project's milestones that ``plan`` needs read, if any."""
    if plan.all_milestones_of:
        return milestones_of(plan.all_milestones_of)
    if plan.milestones_if_dependent:
        # only a project with dependencies needs its milestones for a reschedule; a cached
        # project without any is trusted here and checked after the read (``ReadMore``)
        owner = cache.get(project_subject(plan.milestones_if_dependent))
        if verify or owner is None or has_dependencies(owner.state):
            return milestones_of(plan.milestones_if_dependent)
    return None


def complete_read(
    plan: RoundPlan, answers: dict[str, StoredMessage], cache: Mapping[str, Cached]
) -> tuple[dict[str, StoredMessage], set[str]]:
    """The last message of every subject the round knows, and the subjects whose states must be
    current (the planned ones and every milestone a wildcard found). ``answers`` (the read's,
    handed over by the shell) is completed in place rather than copied: this is per round."""
    for subject in plan.trusted:  # a wildcard may have read it fresh: then that answer stands
        answers.setdefault(subject, StoredMessage(cache[subject].seq, subject, b""))
    prefixes = tuple(w[:-1] for w in plan.wildcards)
    found = {s for s in answers if s.startswith(prefixes)} if prefixes else set()
    return answers, plan.subjects | found


# -- how one unit is decided -----------------------------------------------------------------------
class StateView:
    """Where a decision finds an aggregate's state: this unit's own events first (``overlay``),
    then what earlier units of the round decided (``working``), then the cache, else the
    initial state."""

    __slots__ = ("cache", "overlay", "working")

    def __init__(self, working: Mapping[str, State], cache: Mapping[str, Cached]) -> None:
        self.overlay: dict[str, State] = {}
        self.working = working
        self.cache = cache

    def state(self, subject: str) -> State:
        if subject in self.overlay:
            return self.overlay[subject]
        if subject in self.working:
            return self.working[subject]
        cached = self.cache.get(subject)
        return cached.state if cached is not None else domain.initial_state(subject)


class Known:
    """The milestone subjects a round knows of, by project: those it read (``last``) and those
    its accepted units decided (``working``). A plan that needs every milestone of a project
    finds them here; scanning every subject of the round for each such plan was quadratic in
    the round's size (17 % of the intake's CPU under the benchmark's reschedules, py-spy)."""

    __slots__ = ("_by", "_last", "_working")

    def __init__(self, last: Mapping[str, StoredMessage], working: Mapping[str, State]) -> None:
        self._last, self._working = last, working
        self._by: dict[str, set[str]] | None = None  # made when first asked

    def milestones(self, prefix: str) -> Set[str]:
        """The known subjects ``<prefix><milestone>`` (``prefix``: a project's, dot included)."""
        if self._by is None:
            self._by = {}
            self.add(self._last)
            self.add(self._working)
        return self._by.get(prefix, _NONE)

    def add(self, subjects: Iterable[str]) -> None:
        """Subjects decided since (what ``working`` gains); nothing to do until first asked."""
        if self._by is None:
            return
        for s in subjects:
            if s.count(".") == 3:
                self._by.setdefault(s[: s.rindex(".") + 1], set()).add(s)


_NONE: frozenset[str] = frozenset()


def subjects_needed(
    plan: domain.Plan,
    view: StateView,
    known: Known,
    wildcards: set[str],
) -> list[str]:
    """The subjects whose states a decision takes: target, reads and, when the plan needs a
    project's milestones, every one the round knows of (read, or decided earlier)."""
    needed = [plan.target, *plan.reads]
    whole = plan.all_milestones_of
    if plan.milestones_if_dependent:
        whole = plan.milestones_if_dependent
        if milestones_of(whole) not in wildcards and has_dependencies(
            view.state(project_subject(whole))
        ):
            raise ReadMore()  # dependencies appeared since the cache said none: read them all
    if whole:
        prefix = f"{project_subject(whole)}."
        mine = [s for s in view.overlay if s.startswith(prefix) and s.count(".") == 3]
        needed += known.milestones(prefix) | set(mine)
    return needed


def decide_command(cmd: Command, states: Mapping[str, State], n: int, of: int) -> Traced:
    """The events of one command; in a unit of several, a refusal names which one it was."""
    try:
        return domain.decide_traced(domain.stamp(cmd.fact, cmd.ce.time), states)
    except Rejected as rej:
        if of > 1:
            raise Rejected(rej.code, f"event #{n + 1} (id {cmd.ce.id}): {rej.message}") from rej
        raise


def envelopes(
    cmd: Command, receipt: str, traced: Traced, now: dt.datetime
) -> tuple[list[OutgoingMessage], list[Ref]]:
    """The receipt and the stored events one command appends (receipt first: a repeat finds its
    events right after it), and their refs. ``now`` is when the log recorded them."""
    ce = cmd.ce
    refs = [
        (type(event).__name__, event_id(ce, i), stream_subject(event))
        for i, (event, _cause) in enumerate(traced)
    ]
    body = Receipt(source=ce.source, id=ce.id, type=ce.type, events=[(t, e) for t, e, _ in refs])
    messages = [OutgoingMessage(receipt, ENCODER.encode(body), 0)]
    for (event, cause), (etype, eid, subject) in zip(traced, refs, strict=True):
        causation, direct = (ce.id, etype == ce.type) if cause is None else (refs[cause][1], False)
        data = stored_bytes(
            ce,
            cmd.extensions,
            event,
            event_id=eid,
            subject=subject,
            recorded=now,
            causation=causation,
            principal=cmd.principal,
            direct=direct,
        )
        messages.append(OutgoingMessage(subject, data))
    return messages, refs


class Decided(NamedTuple):
    messages: list[OutgoingMessage]
    refs: list[CommandRefs]  # per command
    overlay: dict[str, State]  # the states the unit's events lead to


def decide_unit(
    unit: Pending,
    plans: Sequence[domain.Plan],
    last: Mapping[str, StoredMessage],
    working: Mapping[str, State],
    cache: Mapping[str, Cached],
    now: dt.datetime,
    wildcards: set[str],
    known: Known,
) -> Decided:
    """One unit's commands in order, each seeing the events of those before it. Raises
    ``Rejected`` (the unit is refused whole) or ``ReadMore``."""
    view = StateView(working, cache)
    messages: list[OutgoingMessage] = []
    refs: list[CommandRefs] = []
    for n, (cmd, plan) in enumerate(zip(unit.commands, plans, strict=True)):
        receipt = unit.receipts[n]
        if receipt in last:
            refs.append(None)  # handled before: answered from its receipt
            continue
        needed = subjects_needed(plan, view, known, wildcards)
        traced = decide_command(cmd, {s: view.state(s) for s in needed}, n, len(unit.commands))
        command_messages, command_refs = envelopes(cmd, receipt, traced, now)
        for (event, _cause), (_type, _id, subject) in zip(traced, command_refs, strict=True):
            view.overlay[subject] = domain.evolve(view.state(subject), event)
        messages += command_messages
        refs.append(command_refs)
    return Decided(messages, refs, view.overlay)


# -- a round: units in arrival order into one atomic batch -----------------------------------------
@dataclass(slots=True)
class Batch:
    """One atomic append in the making. The first message of each subject states the subject's
    expected last sequence (OCC; 0 for none yet, so a receipt is written at most once); later
    ones follow it inside the same all-or-nothing batch."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)

    def add(self, messages: Sequence[OutgoingMessage], last: Mapping[str, StoredMessage]) -> None:
        for m in messages:
            if m.subject not in self.expected:
                self.expected.add(m.subject)
                seq = last[m.subject].seq if m.subject in last else 0
                m = OutgoingMessage(m.subject, m.data, seq)
            self.messages.append(m)


@dataclass
class RoundOutcome(Generic[U]):
    batch: Batch = field(default_factory=Batch)
    accepted: list[tuple[U, list[CommandRefs]]] = field(default_factory=list)  # in the batch
    answered: list[tuple[U, Reply]] = field(default_factory=list)  # settled without appending
    crashed: list[tuple[U, Exception]] = field(default_factory=list)  # (among answered) for logs
    deferred: list[U] = field(default_factory=list)  # to the next round, in order
    verify: list[U] = field(default_factory=list)  # (among deferred) to decide on a full read
    working: dict[str, State] = field(default_factory=dict)  # states after the accepted units

    def defer(self, unit: U, *, verify: bool = False) -> None:
        self.deferred.append(unit)
        if verify:
            self.verify.append(unit)


def decide_round(
    units: Sequence[U],
    plan: RoundPlan,
    last: Mapping[str, StoredMessage],
    unreadable: Mapping[str, str],
    cache: Mapping[str, Cached],
    now: dt.datetime,
    max_messages: int,
) -> RoundOutcome[U]:
    """Decide ``units`` in arrival order against what the round read (``last``, the cache), each
    seeing the states earlier ones lead to; what fits goes into one batch."""
    out: RoundOutcome[U] = RoundOutcome()
    known = Known(last, out.working)
    claimed: set[str] = set()
    for unit, plans in zip(units, plan.plans, strict=True):
        if all(r in last for r in unit.receipts):
            out.answered.append((unit, answer_from_receipts(unit.receipts, last)))
            continue
        if claimed.intersection(unit.receipts):
            out.defer(unit)  # the same CloudEvent twice in one round: answer it next round
            continue
        blocked = first_unreadable(plans, unreadable)
        if blocked is not None:
            out.answered.append((unit, Reply.fail("unavailable", blocked)))
            continue
        decided = _decide(unit, plans, plan, last, cache, now, out, known)
        if decided is not None and _join(unit, decided, last, max_messages, out):
            claimed.update(unit.receipts)
            known.add(decided.overlay)
    return out


def first_unreadable(plans: Sequence[domain.Plan], unreadable: Mapping[str, str]) -> str | None:
    """Why a unit cannot be decided (a subject's history this version cannot read), if so."""
    if not unreadable:
        return None
    needed = (s for p in plans for s in (p.target, *p.reads))
    return next((unreadable[s] for s in needed if s in unreadable), None)


def _decide(
    unit: U,
    plans: Sequence[domain.Plan],
    plan: RoundPlan,
    last: Mapping[str, StoredMessage],
    cache: Mapping[str, Cached],
    now: dt.datetime,
    out: RoundOutcome[U],
    known: Known,
) -> Decided | None:
    """The unit decided, or None with the reason recorded in ``out`` (deferred or answered)."""
    try:
        return decide_unit(unit, plans, last, out.working, cache, now, plan.wildcards, known)
    except ReadMore:
        out.defer(unit, verify=True)
    except Rejected as rej:
        if plan.fast:  # receipts were not read: a repeat must get its first answer, so verify
            out.defer(unit, verify=True)
        else:
            out.answered.append((unit, Reply.fail(rej.code, rej.message)))
    except Exception as exc:  # one unit's bug must not fail the others of the round
        out.crashed.append((unit, exc))
        reply = Reply.fail("internal", f"the intake failed on this message: {exc!r}")
        out.answered.append((unit, reply))
    return None


def _join(
    unit: U,
    decided: Decided,
    last: Mapping[str, StoredMessage],
    max_messages: int,
    out: RoundOutcome[U],
) -> bool:
    """Add a decided unit to the batch if it fits; one too large even alone is refused."""
    batch = out.batch
    if len(batch.messages) + len(decided.messages) > max_messages:
        if batch.messages:
            out.defer(unit)
        else:
            reply = Reply.fail(
                "too_large",
                f"this batch needs {len(decided.messages)} log messages; "
                f"at most {max_messages} fit in one atomic append: send fewer events",
            )
            out.answered.append((unit, reply))
        return False
    out.working.update(decided.overlay)
    batch.add(decided.messages, last)
    out.accepted.append((unit, decided.refs))
    return True


# -- positions become replies ----------------------------------------------------------------------
def cache_updates(
    messages: Sequence[OutgoingMessage], last_seq: int, working: Mapping[str, State]
) -> list[tuple[str, Cached]]:
    """What the cache learns from an append ending at ``last_seq``: every subject written whose
    state the round decided, at the position of its last message in the batch."""
    first = last_seq - len(messages) + 1
    written = {m.subject: first + i for i, m in enumerate(messages)}
    return [(s, Cached(working[s], seq)) for s, seq in written.items() if s in working]


def replies(
    accepted: Sequence[tuple[Pending, Sequence[CommandRefs]]],
    last_seq: int,
    appended: int,
    last: Mapping[str, StoredMessage],
) -> list[Reply]:
    """Each accepted unit's reply, in batch order: a receipt takes a position before its events;
    a command handled before is answered from its receipt."""
    position = last_seq - appended + 1
    out: list[Reply] = []
    for unit, refs in accepted:
        events: list[EventRef] = []
        for receipt, per_command in zip(unit.receipts, refs, strict=True):
            if per_command is None:
                events.extend(refs_from_receipt(last[receipt]))
                continue
            position += 1  # the receipt
            for etype, eid, _subject in per_command:
                events.append(EventRef(etype, eid, position))
                position += 1
        out.append(Reply.ok(events))
    return out


def refs_from_receipt(stored: StoredMessage) -> list[EventRef]:
    receipt = RECEIPT_DECODER.decode(stored.data)
    return [
        EventRef(etype, eid, stored.seq + 1 + i) for i, (etype, eid) in enumerate(receipt.events)
    ]


def answer_from_receipts(receipts: Sequence[str], last: Mapping[str, StoredMessage]) -> Reply:
    return Reply.ok([ref for r in receipts for ref in refs_from_receipt(last[r])])
