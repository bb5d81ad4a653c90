"""A decision gate's sign-off as the status shows it (README "Decision gates"): its state, who
has approved and who is pending, and the reason the health explains it with. Pure."""

from __future__ import annotations

from typing import Any

from projections.status import SignOff, StatusRow

STATES = ("not_requested", "awaiting", "rejected", "approved")


def needed(gate: SignOff) -> int:
    return gate.approvals_needed or len(gate.approvers)


def approved_by(gate: SignOff) -> list[str]:
    return [a for a in gate.approvers if a in gate.approvals]


def state(row: StatusRow, gate: SignOff) -> str:
    if len(gate.approvals) >= needed(gate) or (row.achieved_at is not None and gate.approvals):
        return "approved"
    if gate.requested_at is None:
        return "not_requested"
    rejection = gate.last_rejection
    if (
        rejection is not None
        and not gate.approvals
        and rejection.position > (gate.requested_position or 0)
    ):
        return "rejected"
    return "awaiting"


def count_text(gate: SignOff, names: bool = True) -> str:
    """E.g. "1 of 2: dana"."""
    given = approved_by(gate)
    text = f"{len(given)} of {needed(gate)}"
    return f"{text}: {', '.join(given)}" if names and given else text


def view(row: StatusRow) -> dict[str, Any] | None:
    """The ``sign_off`` field of a milestone's status (None: no gate)."""
    gate = row.sign_off
    if gate is None:
        return None
    rejection = gate.last_rejection
    return {
        "approvers": list(gate.approvers),
        "needed": needed(gate),
        "approved_by": approved_by(gate),
        "pending": [a for a in gate.approvers if a not in gate.approvals],
        "state": state(row, gate),
        "requested_at": gate.requested_at,
        "approvals": {
            who: {
                "at": a.at,
                "meaning": a.meaning,
                "reason": a.reason,
                "principal": a.principal,
            }
            for who, a in gate.approvals.items()
        },
        "last_rejection": None
        if rejection is None
        else {
            "by": rejection.by,
            "at": rejection.at,
            "reason": rejection.reason,
            "meaning": rejection.meaning,
            "principal": rejection.principal,
        },
    }


def reason(row: StatusRow) -> str | None:
    """What the gate adds to the health's reasons: for an open gate whose tasks are done,
    "awaiting approval (1 of 2: dana)" (after a rejection, who rejected it and why); for one
    missed while it waited, "awaited approval (1 of 2)"."""
    gate = row.sign_off
    if gate is None or row.achieved_at is not None or row.cancelled:
        return None
    if row.missed and gate.awaited_approval:
        return f"awaited approval ({count_text(gate, names=False)})"
    if gate.requested_at is None:
        return None
    awaiting = f"awaiting approval ({count_text(gate)})"
    if state(row, gate) == "rejected" and gate.last_rejection is not None:
        r = gate.last_rejection
        return f"{awaiting}; reopened: rejected by {r.by}: {r.reason}"
    if state(row, gate) == "approved":  # a time gate, judged at its date
        return f"approved ({count_text(gate)}): achieved when its date arrives"
    return awaiting


def presented(row: StatusRow, judged: dict[str, Any]) -> dict[str, Any]:
    """A judged status (``services.domain.health.present``) with its gate shown: ``sign_off``
    as ``view`` says, the gate's reason first among the health's reasons."""
    out = {**judged, "sign_off": view(row)}
    why = reason(row)
    if why is not None:
        out["health_reasons"] = [why, *judged["health_reasons"]]
    return out
