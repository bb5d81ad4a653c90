"""Failed deliveries are counted without reading the delivered ones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

The notifier's ``milestones_deliveries{status="failed"}`` gauge counts failed deliveries every
few seconds; pending ones already have ``deliveries_due``. A partial index keeps that count small
however long the delivery log grows (a plain ``CREATE INDEX``: migrations run in one start-up
transaction, where ``CONCURRENTLY`` cannot).
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX deliveries_failed ON milestones_notify.deliveries (created_at) "
        "WHERE status = 'failed'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX milestones_notify.deliveries_failed")
