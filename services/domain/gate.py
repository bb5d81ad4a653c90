"""Decision gates: a milestone that needs the sign-off of named principals. Pure.

The gate's own state and rules that need nothing of the milestone but its tasks; the milestone
decider (``services.domain.milestone``) calls them. README "Decision gates" has the rules.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from events.errors import Rejected

MAX_APPROVERS = 20


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime | None
    meaning: str


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    approvers: tuple[str, ...] = ()
    approvals_needed: int | None = None  # None: every approver
    approvals: dict[str, Signature] = {}  # approver -> their approval
    requested: bool = False  # an ApprovalRequested stands (its tasks are done)

    @property
    def active(self) -> bool:
        return bool(self.approvers)

    @property
    def needed(self) -> int:
        return self.approvals_needed or len(self.approvers)

    @property
    def complete(self) -> bool:
        return not self.active or len(self.approvals) >= self.needed

    @property
    def missing(self) -> int:
        return max(self.needed - len(self.approvals), 0)

    @property
    def pending(self) -> list[str]:
        return [a for a in self.approvers if a not in self.approvals]

    def set(self, approvers: list[str], needed: int | None) -> Gate:
        if not approvers:
            return Gate()
        kept = {a: at for a, at in self.approvals.items() if a in approvers}
        return msgspec.structs.replace(
            self, approvers=tuple(approvers), approvals_needed=needed, approvals=kept
        )

    def approve(self, approver: str, at: dt.datetime | None, meaning: str) -> Gate:
        signature = Signature(at=at, meaning=meaning)
        return msgspec.structs.replace(self, approvals={**self.approvals, approver: signature})

    def cleared(self) -> Gate:
        """Its tasks are open again: the approvals and the request no longer stand."""
        return msgspec.structs.replace(self, approvals={}, requested=False)


def check_approvers(approvers: list[str], needed: int | None, milestone_id: str) -> None:
    """Raises ``Rejected("invalid")`` unless the list can make (or unmake) a gate."""
    if not approvers:
        if needed is not None:
            raise Rejected(
                "invalid",
                f"milestone {milestone_id}: approvals_needed without approvers: name the "
                "approvers, or leave both out",
            )
        return
    if len(approvers) > MAX_APPROVERS:
        raise Rejected(
            "invalid",
            f"milestone {milestone_id}: {len(approvers)} approvers; at most {MAX_APPROVERS}",
        )
    twice = sorted({a for a in approvers if approvers.count(a) > 1})
    if twice:
        raise Rejected(
            "invalid",
            f"milestone {milestone_id}: approvers named twice ({', '.join(twice)}): name each once",
        )
    if needed is not None and not 1 <= needed <= len(approvers):
        raise Rejected(
            "invalid",
            f"milestone {milestone_id}: approvals_needed is {needed}; it must be from 1 to the "
            f"number of approvers ({len(approvers)}), or left out (every approver)",
        )


def signer_check(gate: Gate, approver: str | None, milestone_id: str, what: str) -> str:
    """The approver of a sign-off message, when it may sign; raises ``Rejected`` otherwise."""
    if not gate.active:
        raise Rejected(
            "rejected",
            f"milestone {milestone_id} is not a decision gate: it needs no {what}; "
            "send ApproversSet to make it one",
        )
    if approver is None:
        raise Rejected(
            "invalid", f"{what}: no approver: the intake names who you are authenticated as"
        )
    if approver not in gate.approvers:
        raise Rejected(
            "forbidden",
            f"{approver} is not an approver of milestone {milestone_id} "
            f"(its approvers: {', '.join(gate.approvers)}); ask whoever plans it to add you",
        )
    return approver


def sign_off_text(gate: Gate) -> str:
    """E.g. "1 of 2: dana" (who has approved)."""
    given = ", ".join(a for a in gate.approvers if a in gate.approvals)
    text = f"{len(gate.approvals)} of {gate.needed}"
    return f"{text}: {given}" if given else text
