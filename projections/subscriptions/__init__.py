"""Subscriptions read model: stakeholders' webhooks per project or milestone (``StakeholderSubscribed``).

The notifier reads it once its checkpoint has passed the event being notified, so a subscription
covers every event appended after it.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from events import StakeholderSubscribed, StoredEvent, decode_stored
from projections.base import Batch
from services.store import EVENTS_STREAM

COLUMNS = ("project_id", "scope", "milestone_id", "stakeholder", "url", "secret", "position", "subscribed_at")


def row(position: int, stored: StoredEvent) -> tuple | None:
    e = stored.data
    if not isinstance(e, StakeholderSubscribed):
        return None
    return (e.project_id, e.milestone_id or "", e.milestone_id, e.stakeholder, e.url, e.secret, position, stored.time)


class SubscriptionsProjection:
    name = "subscriptions"
    stream = EVENTS_STREAM
    subject = "milestones.events.>"  # every position, so waiting on the checkpoint works for any event
    tables = ("ms_subscriptions",)
    schema_sql = (Path(__file__).parent / "schema.sql").read_text()
    decode = staticmethod(decode_stored)

    async def apply(self, conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
        records = [r for p, e in batch if (r := row(p, e)) is not None]
        if records:
            await conn.executemany(
                f"INSERT INTO ms_subscriptions ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "
                "ON CONFLICT DO NOTHING", records)
