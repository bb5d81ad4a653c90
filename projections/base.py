"""What a read model is to the runner: a name, its tables and their DDL, and ``apply``.

``apply`` gets a batch of (position, event) in stream order on a connection inside the
runner's transaction; the pure part of each read model is its ``evolve``/``rows`` function.
"""

from __future__ import annotations

from typing import Protocol

import asyncpg

from events import StoredEvent

Batch = list[tuple[int, StoredEvent]]


class Projection(Protocol):
    name: str
    stream: str
    subject: str
    tables: tuple[str, ...]
    schema_sql: str

    def decode(self, data: bytes) -> StoredEvent: ...

    async def apply(self, conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
        """Write the batch's rows; ``schema`` is where this runner's tables live (live or rebuild)."""
