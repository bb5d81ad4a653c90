"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Plain SQL, one statement per ``op.execute`` (the services run the rendered text; the command
line runs each through asyncpg), schema-qualified (``milestones_notify``).
"""

from __future__ import annotations

from alembic import op

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("")


def downgrade() -> None:
    op.execute("")
