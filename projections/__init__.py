"""Read models rebuilt from the event log. ``PROJECTIONS`` lists every one the runner knows."""

from __future__ import annotations

from typing import Any

from projections.audit import AuditProjection, RejectionsProjection
from projections.base import Projection
from projections.history import HistoryProjection
from projections.status import StatusProjection

PROJECTIONS: dict[str, Projection[Any]] = {
    p.name: p
    for p in (StatusProjection(), HistoryProjection(), AuditProjection(), RejectionsProjection())
}

__all__ = ["PROJECTIONS"]
