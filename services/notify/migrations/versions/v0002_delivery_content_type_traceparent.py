"""Deliveries keep their content type and the trace they continue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05

``content_type``: what the body is (existing rows: the JSON they were sent as; CloudEvents
subscriptions store ``application/cloudevents+json``). ``traceparent``: the W3C trace context of
the event that caused the delivery, so the webhook's span is linked to it (none for old rows and
digests).
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # a constant default: PostgreSQL 11+ adds it without rewriting the table
    op.execute(
        "ALTER TABLE milestones_notify.deliveries "
        "ADD COLUMN content_type text NOT NULL DEFAULT 'application/json'"
    )
    op.execute("ALTER TABLE milestones_notify.deliveries ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE milestones_notify.deliveries DROP COLUMN traceparent")
    op.execute("ALTER TABLE milestones_notify.deliveries DROP COLUMN content_type")
