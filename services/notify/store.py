"""The notifier's own tables (deliveries, attempts, digests): not read models, so never dropped
by a rebuild."""

from __future__ import annotations

from pathlib import Path

from projections.db import Conn, lock_key

SCHEMA_SQL = (Path(__file__).parent / "schema.sql").read_text()


async def ensure_schema(conn: Conn) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("notifier-schema"))
        await conn.execute(SCHEMA_SQL)
