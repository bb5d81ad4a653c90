"""The notifier's tables in a schema of their own.

Revision ID: 0001
Revises:
Create Date: 2026-12-05

Builds before this one created the tables in ``milestones``, the read models' schema, which the
upgrade path for read models drops. Tables found there are moved (``ALTER TABLE … SET SCHEMA``:
rows, indexes, constraints and the foreign key go with them); what is missing is created as the
previous ``schema.sql`` made it.
"""

from __future__ import annotations

from textwrap import dedent

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("deliveries", "delivery_attempts", "notified_health", "digests")


def sql(statement: str) -> None:
    op.execute(dedent(statement).strip())


def upgrade() -> None:
    for table in TABLES:
        # a table is moved only when the new schema has none of that name (adopting twice, or
        # an empty table an older build made after the upgrade, is left for the start-up check)
        sql(
            f"""
            DO $$
            BEGIN
                IF to_regclass('milestones.{table}') IS NOT NULL
                   AND to_regclass('milestones_notify.{table}') IS NULL THEN
                    ALTER TABLE milestones.{table} SET SCHEMA milestones_notify;
                END IF;
            END
            $$
            """
        )
    sql(
        """
        CREATE TABLE IF NOT EXISTS milestones_notify.deliveries (
            id              text        PRIMARY KEY,  -- also the Idempotency-Key header
            kind            text        NOT NULL,     -- milestone.achieved | project.digest | …
            project_id      text        NOT NULL,
            milestone_id    text,
            stakeholder     text        NOT NULL,
            url             text        NOT NULL,
            secret          text,                     -- sealed (services/notify/secretbox.py)
            position        bigint,                   -- the event that caused it (none: digests)
            body            bytea       NOT NULL,     -- sent unchanged on every attempt
            status          text        NOT NULL DEFAULT 'pending',  -- pending|delivered|failed
            attempts        integer     NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_status     integer,
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS deliveries_due ON milestones_notify.deliveries "
        "(next_attempt_at) WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS deliveries_project ON milestones_notify.deliveries "
        "(project_id, created_at)"
    )
    sql(
        """
        CREATE TABLE IF NOT EXISTS milestones_notify.delivery_attempts (
            delivery_id  text        NOT NULL REFERENCES milestones_notify.deliveries (id),
            attempt      integer     NOT NULL,
            attempted_at timestamptz NOT NULL,
            status_code  integer,
            error        text,
            duration_ms  double precision NOT NULL,
            PRIMARY KEY (delivery_id, attempt)
        )
        """
    )
    # the last at-risk/late state notified per milestone, so that a state is announced once
    sql(
        """
        CREATE TABLE IF NOT EXISTS milestones_notify.notified_health (
            project_id   text NOT NULL,
            milestone_id text NOT NULL,
            health       text NOT NULL,
            due          date NOT NULL,
            PRIMARY KEY (project_id, milestone_id)
        )
        """
    )
    # every digest built: what it said and up to which position (the next says what changed)
    sql(
        """
        CREATE TABLE IF NOT EXISTS milestones_notify.digests (
            project_id  text        NOT NULL,
            position    bigint      NOT NULL,
            created_at  timestamptz NOT NULL,
            body        jsonb       NOT NULL,
            PRIMARY KEY (project_id, position)
        )
        """
    )


def downgrade() -> None:
    """Back where the previous build looks for them (rows kept)."""
    op.execute("CREATE SCHEMA IF NOT EXISTS milestones")
    for table in TABLES:
        op.execute(f"ALTER TABLE milestones_notify.{table} SET SCHEMA milestones")
