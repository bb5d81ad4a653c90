"""A decision gate on the milestone page: its sign-off state, and for a signed-in approver a form
to approve or reject it (README "Decision gates").

The form posts to ``/ui/projects/{p}/milestones/{m}/approvals`` with the session's CSRF token
(the edge, ``services.app.auth_http``, checks it as for every state-changing request of a
session); the route submits the sign-off through the intake as the session's principal and
redirects back to the page with the outcome (post/redirect/get).
"""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import urlencode

import msgspec
import structlog
from litestar import Request, post
from litestar.params import FromPath
from litestar.response import Redirect

from events.common import ID_PATTERN
from services.auth.principal import Principal
from services.dashboard.layout import date_text
from services.intake.approvals import SignOff, submit_sign_off
from services.intake.service import IntakeService

log = structlog.get_logger("milestones.dashboard")

STATE_WORDS = {
    "not_requested": "not requested yet (tasks open)",
    "awaiting": "awaiting approval",
    "rejected": "rejected: awaiting approval again",
    "approved": "approved",
}


def _when(value: object) -> str:
    return date_text(str(value)[:16].replace("T", " "))


def notice(query: dict[str, Any]) -> str:
    """The outcome of the form just posted (the redirect's query string)."""
    if query.get("signed") in ("approve", "reject"):
        done = (
            "Your approval is recorded."
            if query["signed"] == "approve"
            else ("Your rejection is recorded: the approvals given so far are cleared.")
        )
        return f'<p class="notice" role="status">{done}</p>'
    code = str(query.get("refused") or "")
    if code:
        # words of our own for the code: the query string is anyone's to write, so the page
        # never shows text that came in it (the full message is in the service's log)
        words = REFUSALS.get(code, "the sign-off was refused")
        return f'<p class="notice error" role="alert">Refused ({escape(code[:20])}): {words}</p>'
    return ""


REFUSALS = {
    "forbidden": "you are not an approver of this gate",
    "conflict": "you have already approved this gate",
    "rejected": "the gate cannot be signed now: its tasks are open, or it is closed",
    "invalid": "the form is not valid: an approval needs its meaning, a rejection its reason",
    "unauthenticated": "your session has ended: sign in again",
}


def section(
    gate: dict[str, Any] | None,
    action: str,
    signer: str | None,
    csrf: str | None,
    closed: bool,
    query: dict[str, Any],
    form_key: str,
) -> str:
    """The page's "Sign-off" section (empty for a milestone that is no gate)."""
    if gate is None:
        return ""
    approvals = gate["approvals"]
    given = "".join(
        f"<li><strong>{escape(who)}</strong> {_when(a['at'])}: {escape(a['meaning'])}"
        + (f" — {escape(a['reason'])}" if a.get("reason") else "")
        + f' <span class="muted">(credential {escape(a.get("principal") or "?")})</span></li>'
        for who, a in approvals.items()
    )
    rejection = gate.get("last_rejection")
    rejected = (
        f"<p>Last rejection: <strong>{escape(rejection['by'])}</strong> "
        f"{_when(rejection['at'])}: {escape(rejection['reason'])}</p>"
        if rejection
        else ""
    )
    state = STATE_WORDS.get(gate["state"], gate["state"])
    body = (
        '<section id="sign-off" aria-labelledby="sign-off-title">'
        '<h2 id="sign-off-title">Sign-off</h2>'
        + notice(query)
        + f'<p>Decision gate: <strong data-sign-off="{escape(gate["state"])}">{state}</strong> '
        f"({len(gate['approved_by'])} of {gate['needed']} approvals"
        + (f": {escape(', '.join(gate['approved_by']))}" if gate["approved_by"] else "")
        + f"). Approvers: {escape(', '.join(gate['approvers']))}"
        + (f"; pending: {escape(', '.join(gate['pending']))}" if gate["pending"] else "")
        + ".</p>"
        + (f"<ul>{given}</ul>" if given else "")
        + rejected
    )
    may_sign = (
        signer is not None and csrf is not None and not closed and signer in gate["approvers"]
    )
    if may_sign:
        body += _form(action, csrf or "", signer or "", form_key)
    return body + "</section>"


def _form(action: str, csrf: str, signer: str, form_key: str) -> str:
    hidden = (
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="key" value="{escape(form_key)}">'
    )
    return (
        f'<form method="post" action="{escape(action)}" aria-label="sign off as '
        f'{escape(signer)}">{hidden}'
        f"<p>Sign as <strong>{escape(signer)}</strong>:</p>"
        '<p><label>Meaning (to approve) <input name="meaning" maxlength="2000" '
        'placeholder="approved for launch"></label></p>'
        '<p><label>Reason (required to reject) <input name="reason" maxlength="2000">'
        "</label></p>"
        '<p><button type="submit" name="decision" value="approve">Approve</button> '
        '<button type="submit" name="decision" value="reject">Reject</button></p></form>'
    )


def _field(value: object) -> str | None:
    text = value.strip() if isinstance(value, str) else ""
    return text or None


def sign_off_form_routes(intake: IntakeService) -> list:
    @post(
        "/ui/projects/{project_id:str}/milestones/{milestone_id:str}/approvals",
        opt={"role": "any"},
        include_in_schema=False,
    )
    async def sign_off_form(
        request: Request, project_id: FromPath[str], milestone_id: FromPath[str]
    ) -> Redirect:
        page = f"/ui/projects/{project_id}/milestones/{milestone_id}"
        fields = await request.form()
        principal = request.user
        try:
            decision = msgspec.convert(
                {
                    "decision": fields.get("decision"),
                    "meaning": _field(fields.get("meaning")),
                    "reason": _field(fields.get("reason")),
                },
                SignOff,
            )
        except msgspec.ValidationError as exc:
            log.info("sign-off form refused", code="invalid", error=str(exc))
            outcome = {"refused": "invalid"}
        else:
            assert isinstance(principal, Principal)
            key = _field(fields.get("key"))
            reply = await submit_sign_off(
                intake, principal, project_id, milestone_id, decision, key
            )
            outcome = (
                {"signed": decision.decision}
                if reply.error is None
                else {"refused": reply.error.code}
            )
            if reply.error is not None:
                log.info("sign-off form refused", code=reply.error.code, error=reply.error.message)
        if not (_is_id(project_id) and _is_id(milestone_id)):
            page = "/ui"
        return Redirect(f"{page}?{urlencode(outcome)}#sign-off", status_code=303)

    return [sign_off_form]


def _is_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None
