"""Read models rebuilt from the event log. ``PROJECTIONS`` lists every one the runner knows."""

from __future__ import annotations

from projections.audit import AuditProjection, RejectionsProjection
from projections.history import HistoryProjection
from projections.status import StatusProjection

PROJECTIONS = {
    p.name: p
    for p in (StatusProjection(), HistoryProjection(), AuditProjection(), RejectionsProjection())
}

__all__ = ["PROJECTIONS"]
