"""From raw bytes to a reply: size, JSON, CloudEvent envelope, type, data; then the committer.

Every entry point (NATS request/reply, the JetStream inbox, HTTP) goes through ``handle``, so
one message gets one verdict and one error text wherever it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from events import (
    CLOUDEVENT_BATCH_DECODER,
    CLOUDEVENT_DECODER,
    DATA_DECODERS,
    EVENT_TYPES,
    INBOUND_TYPES,
    MilestoneApprovalRejected,
    MilestoneApproved,
    Reply,
)
from events.attributes import Extensions, extensions_in, json_media_type, raw_attributes
from events.bounds import MAX_JSON_DEPTH, OutOfBounds, check_data, check_struct, json_too_deep
from events.common import Event
from events.envelope import CloudEventIn
from events.errors import Rejected
from services.auth.principal import Principal
from services.intake.committer import Command, Committer
from services.intake.webhooks import STRICT, Webhooks

# The source of sign-offs made through the approvals route (HTTP, the CLI, the dashboard's form):
# the intake itself builds those CloudEvents, so the caller need not hold it as a publisher source
APPROVALS_SOURCE = "milestones/approvals"
SIGN_OFF_TYPES = frozenset({"MilestoneApproved", "MilestoneApprovalRejected"})
# A gate's approvers change by an admin only, through the approvals route (decision
# "set_approvers"): whoever may publish for a project plans its gates (MilestonePlanned's
# approvers), but must not be able to loosen one and then achieve it without its sign-off.
GATE_CHANGE = "ApproversSet"


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 64 * 1024
    max_batch: int = 100
    max_depth: int = MAX_JSON_DEPTH  # nesting of arrays and objects (events.bounds)


def _signed_by(fact: Event, principal: Principal, where: str) -> Event:
    """A sign-off names who sent it, as the transport authenticated them: never as it says."""
    if not isinstance(fact, MilestoneApproved | MilestoneApprovalRejected):
        return fact
    if fact.approver is not None and fact.approver != principal.signer:
        raise Rejected(
            "forbidden",
            f"{where}: approver {fact.approver!r} is not who you are authenticated as "
            f"({principal.signer!r}): approver is who you are authenticated as: leave it out",
        )
    return msgspec.structs.replace(fact, approver=principal.signer)


def _decode_data(
    n: int | None, ce: CloudEventIn, principal: Principal, extensions: Extensions
) -> Command:
    where = f"CloudEvent #{n} (id {ce.id})" if n is not None else f"CloudEvent {ce.id}"
    decoder = DATA_DECODERS.get(ce.type) if ce.type in INBOUND_TYPES else None
    if decoder is None:
        known = ", ".join(sorted(INBOUND_TYPES))
        raise Rejected(
            "unknown_type",
            f"{where}: type {ce.type!r} is not one Milestones accepts; use one of: {known}",
        )
    try:
        fact = decoder.decode(ce.data)
        check_data(fact, ce.time)  # the intake's bounds: stored events decode without them
    except (msgspec.ValidationError, OutOfBounds) as exc:
        why = _missing(ce) if str(exc).startswith("Object missing required field") else None
        raise Rejected("invalid", f"{where}: {ce.type} data is not valid: {why or exc}") from exc
    except msgspec.DecodeError as exc:
        raise Rejected("invalid", f"{where}: data is not a JSON object: {exc}") from exc
    return Command(ce, _signed_by(fact, principal, where), principal.id, extensions)


def _missing(ce: CloudEventIn) -> str | None:
    """Every required field the data lacks (msgspec names only the first it meets)."""
    try:
        given = msgspec.json.decode(ce.data)
    except msgspec.DecodeError:
        return None
    if not isinstance(given, dict):
        return None
    wanted = [f.encode_name for f in msgspec.structs.fields(EVENT_TYPES[ce.type]) if f.required]
    missing = [name for name in wanted if name not in given]
    if len(missing) < 2:  # msgspec's own words say it (tests and clients match on them)
        return None
    return "Object missing required fields " + ", ".join(f"`{name}`" for name in missing)


def _decode_envelopes(
    body: bytes, limits: Limits
) -> tuple[list[CloudEventIn], list[Extensions], bool]:
    """The CloudEvents of a body, the extension attributes of each, and whether it was a
    batch; every failure is ``invalid``."""
    head = body.lstrip()[:1]
    if head not in (b"{", b"["):
        raise Rejected(
            "invalid",
            "expected a CloudEvent JSON object, or a JSON array of them (structured mode); "
            "or send binary mode: the attributes as ce-* headers, the data as a JSON body",
        )
    try:
        body.decode("utf-8")  # msgspec checks only the strings it decodes, not the skipped ones
    except UnicodeDecodeError as exc:
        raise Rejected(
            "invalid", f"the body is not UTF-8 (byte {exc.start}): send UTF-8 encoded JSON"
        ) from exc
    too_deep = Rejected(
        "invalid",
        f"JSON nested more than {limits.max_depth} levels deep: flatten the message",
    )
    try:
        if head == b"{":
            ces, batch = [CLOUDEVENT_DECODER.decode(body)], False
        else:
            ces, batch = CLOUDEVENT_BATCH_DECODER.decode(body), True
    except msgspec.ValidationError as exc:
        raise Rejected("invalid", f"not a valid CloudEvent 1.0: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise Rejected("invalid", f"malformed JSON: {exc}") from exc
    except RecursionError:  # msgspec's own limit, near Python's recursion limit
        raise too_deep from None
    if json_too_deep(body, limits.max_depth):  # valid JSON: the check is exact
        raise too_deep
    extensions = []
    # a second pass over the names only: what ``CloudEventIn`` does not name is an extension
    for n, (ce, members) in enumerate(zip(ces, raw_attributes(body, batch), strict=True), 1):
        where = f"CloudEvent #{n}" if batch else "the CloudEvent"
        try:
            check_struct(ce)
            extensions.append(extensions_in(members))
        except OutOfBounds as exc:
            raise Rejected("invalid", f"{where} is not valid: {exc}") from exc
        why = None if ce.datacontenttype is None else json_media_type(ce.datacontenttype)
        if why is not None:
            raise Rejected("invalid", f"{where}: datacontenttype: {why}")
    return ces, extensions, batch


def parse(
    body: bytes,
    limits: Limits,
    principal: Principal,
    expected_type: str | None = None,
    *,
    sign_off: bool = False,
) -> list[Command]:
    """Validate a message; raises ``Rejected`` with a contract code and a fix-it message.
    ``sign_off``: the approvals route built it (source ``APPROVALS_SOURCE``, sign-offs only)."""
    if len(body) > limits.max_bytes:
        raise Rejected(
            "too_large",
            f"message is {len(body)} bytes; the limit is {limits.max_bytes} bytes: split it",
        )
    ces, extensions, batch = _decode_envelopes(body, limits)
    if batch and not ces:
        raise Rejected("invalid", "the batch is empty: send at least one CloudEvent")
    if len(ces) > limits.max_batch:
        raise Rejected(
            "too_large", f"batch has {len(ces)} events; the limit is {limits.max_batch}: split it"
        )
    seen: set[tuple[str, str]] = set()
    commands = []
    for n, (ce, extra) in enumerate(zip(ces, extensions, strict=True), 1):
        key = (ce.source, ce.id)
        if key in seen:
            raise Rejected(
                "invalid",
                f"CloudEvent #{n}: id {ce.id!r} from {ce.source!r} appears twice in this batch",
            )
        seen.add(key)
        where = f"CloudEvent #{n}" if batch else "the CloudEvent"
        if sign_off and (
            ce.source != APPROVALS_SOURCE or ce.type not in SIGN_OFF_TYPES | {GATE_CHANGE}
        ):
            raise Rejected("invalid", f"{where}: the approvals route carries sign-offs only")
        if (
            ce.type == GATE_CHANGE
            and principal.via != "system"
            and not (sign_off and principal.may("admin"))
        ):
            raise Rejected(
                "forbidden",
                f"{where}: a gate's approvers are changed by an admin only: POST "
                '/projects/{project_id}/milestones/{milestone_id}/approvals with {"decision": '
                '"set_approvers", "approvers": [...]} (a publisher names them in MilestonePlanned)',
            )
        if not (sign_off or principal.may_source(ce.source)):
            allowed = ", ".join(sorted(principal.sources)) or "none"
            raise Rejected(
                "forbidden",
                f"{where}: credential {principal.id} may not publish as source {ce.source!r}"
                f" (its sources: {allowed}); ask an admin for a credential of that source",
            )
        command = _decode_data(n if batch else None, ce, principal, extra)
        project = getattr(command.fact, "project_id", None)
        if project is not None and not principal.may_project(project):
            raise Rejected(
                "forbidden",
                f"{where}: credential {principal.id} may not publish for project {project!r}",
            )
        commands.append(command)
    if expected_type is not None and not batch and commands[0].ce.type != expected_type:
        raise Rejected(
            "invalid",
            f"subject names type {expected_type!r} "
            f"but the CloudEvent's type is {commands[0].ce.type!r}: "
            "publish to the subject of its type",
        )
    return commands


async def handle(
    body: bytes,
    committer: Committer,
    limits: Limits,
    principal: Principal,
    expected_type: str | None = None,
    *,
    webhooks: Webhooks = STRICT,
    answered: bool = True,
    sign_off: bool = False,
) -> Reply:
    """``answered``: the sender gets the reply (not the inbox), so a subscription's generated
    secret can be returned in it (``services.intake.webhooks``). ``sign_off``: an approval or
    rejection from the approvals route, which any authenticated principal but a feed may send
    (whether it is an approver is the gate's to say)."""
    if sign_off and principal.role == "feed":
        return Reply.fail("forbidden", f"credential {principal.id} is a feed: it signs nothing")
    if not sign_off and not principal.may("publisher"):
        return Reply.fail(
            "forbidden", f"credential {principal.id} ({principal.role}) may not publish events"
        )
    try:
        # subscriptions: target checked, secret sealed, before anything is decided or stored
        commands = parse(body, limits, principal, expected_type, sign_off=sign_off)
        prepared = webhooks.admit(commands, answered=answered)
    except Rejected as exc:
        return Reply.fail(exc.code, exc.message)
    reply = await committer.submit(prepared.commands)
    return await webhooks.disclose(reply, prepared, committer.log)
