"""HTTP ``POST /projects/{project_id}/milestones/{milestone_id}/approvals``: a gate's sign-off
(and, for an admin only, a change of its approvers: ``"decision": "set_approvers"``).

The route builds the CloudEvent (source ``milestones/approvals``, the ``Idempotency-Key`` header
as its id, generated when absent) and submits it through the normal intake with the caller as
its principal, so OCC, receipts, the log and the projections apply as to any event. The
approver is who the caller is authenticated as (``Principal.signer``): never a field it sends.
Any principal but a feed may call it; whether it is an approver is the gate's to say
(``forbidden`` otherwise). README "Decision gates".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Annotated, Literal

import msgspec
from litestar import MediaType, Request, Response, post
from litestar.params import FromPath

from events import ENCODER, Reply
from events.common import ApproverName, Int32, Text
from events.errors import http_status
from services.auth.principal import Principal
from services.intake.http_docs import ApprovalsOperation
from services.intake.parse import APPROVALS_SOURCE
from services.intake.service import IntakeService

Decision = Literal["approve", "reject", "set_approvers"]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_KINDS = {
    "approve": "MilestoneApproved",
    "reject": "MilestoneApprovalRejected",
    "set_approvers": "ApproversSet",
}


class SignOff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decision: Decision
    meaning: Text | None = None  # required to approve: what the signature means
    reason: Text | None = None  # required to reject: why
    # set_approvers (an admin only): the gate's new approvers ([] makes it an ordinary
    # milestone) and how many approvals it needs (absent: all)
    approvers: list[ApproverName] | None = None
    approvals_needed: Int32 | None = None


_SIGN_OFF = msgspec.json.Decoder(SignOff)


def sign_off_event(
    principal: Principal,
    project_id: str,
    milestone_id: str,
    sign_off: SignOff,
    key: str | None,
    now: dt.datetime,
) -> bytes:
    """The CloudEvent the route submits. Its id is the caller's key (one per principal: the key
    is hashed with the principal's id, so two callers' keys never meet), else a new one."""
    kind = _KINDS[sign_off.decision]
    if key is None:
        ce_id = uuid.uuid4().hex
    else:  # the decision and the gate too: a key reused for another decision is another event
        scope = f"{principal.id}\0{kind}\0{project_id}\0{milestone_id}\0{key}"
        ce_id = hashlib.sha256(scope.encode()).hexdigest()[:40]
    data: dict[str, object] = {"project_id": project_id, "milestone_id": milestone_id}
    fields = ("approvers", "approvals_needed") if kind == "ApproversSet" else ("meaning", "reason")
    for field in fields:
        value = getattr(sign_off, field)
        if value is not None:
            data[field] = value
    return ENCODER.encode(
        {
            "specversion": "1.0",
            "id": ce_id,
            "source": APPROVALS_SOURCE,
            "type": kind,
            "time": now.isoformat(),
            "actor": principal.signer,
            "data": data,
        }
    )


def decode_sign_off(body: bytes) -> SignOff | Reply:
    try:
        return _SIGN_OFF.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        if "`approver`" in str(exc):
            return Reply.fail("forbidden", "approver is who you are authenticated as: leave it out")
        return Reply.fail(
            "invalid",
            f'send JSON {{"decision": "approve" | "reject", "meaning": ..., "reason": ...}}: {exc}',
        )


async def submit_sign_off(
    intake: IntakeService,
    principal: Principal,
    project_id: str,
    milestone_id: str,
    sign_off: SignOff,
    key: str | None = None,
    correlation: str | None = None,
) -> Reply:
    """One approval or rejection through the intake, as ``principal``."""
    if sign_off.decision == "approve" and sign_off.meaning is None:
        return Reply.fail(
            "invalid", 'an approval says what it means: send "meaning", e.g. "approved for launch"'
        )
    if sign_off.decision == "reject" and sign_off.reason is None:
        return Reply.fail("invalid", 'a rejection says why: send "reason"')
    if sign_off.decision == "set_approvers":
        if not principal.may("admin"):
            return Reply.fail(
                "forbidden",
                f"credential {principal.id} ({principal.role}): a gate's approvers are changed "
                "by an admin only",
            )
        if sign_off.approvers is None:
            return Reply.fail(
                "invalid", 'send "approvers": the names of the gate\'s approvers ([]: no gate)'
            )
    if key is not None and not 1 <= len(key) <= 200:
        return Reply.fail("invalid", "Idempotency-Key: 1 to 200 characters")
    body = sign_off_event(
        principal, project_id, milestone_id, sign_off, key, dt.datetime.now(dt.UTC)
    )
    return await intake.handle(body, "http", None, correlation, principal, sign_off=True)


def _reply(reply: Reply) -> Response[bytes]:
    status = 202 if reply.error is None else http_status(reply.error.code)
    return Response(ENCODER.encode(reply), status_code=status, media_type=MediaType.JSON)


def approval_routes(intake: IntakeService) -> list:
    @post(
        "/projects/{project_id:str}/milestones/{milestone_id:str}/approvals",
        summary="Approve or reject a decision gate, as the authenticated principal",
        description=(
            'Body: `{"decision": "approve" | "reject", "meaning": "approved for launch", '
            '"reason": "..."}` (an approval needs `meaning`, a rejection `reason`). The approver '
            "is who the credential names (its name, or a JWT's sub); an optional "
            "`Idempotency-Key` header makes a retry answer like the first request. The reply "
            "is the one of POST /events. An admin changes the gate itself with "
            '`{"decision": "set_approvers", "approvers": ["dana"], "approvals_needed": 1}`.'
        ),
        status_code=202,
        opt={"role": "any"},
        operation_class=ApprovalsOperation,
    )
    async def post_approval(
        request: Request, project_id: FromPath[str], milestone_id: FromPath[str]
    ) -> Response[bytes]:
        principal = request.scope.get("user")
        if not isinstance(principal, Principal):  # the edge always sets it; never guess
            return _reply(Reply.fail("unauthenticated", "send Authorization: Bearer <token>"))
        decoded = decode_sign_off(await request.body())
        if isinstance(decoded, Reply):
            return _reply(decoded)
        reply = await submit_sign_off(
            intake,
            principal,
            project_id,
            milestone_id,
            decoded,
            request.headers.get("idempotency-key"),
            request.headers.get("x-correlation-id"),
        )
        return _reply(reply)

    return [post_approval]
