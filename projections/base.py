"""What a read model is to the runner: a name, its tables and their DDL, ``decode`` and ``apply``.

``decode`` turns a message's body into the record ``apply`` takes (a ``StoredEvent`` for the
event projections, a ``Rejection`` for the rejections projection). ``apply`` gets a batch of
(position, record) in stream order on a connection inside the runner's transaction; the pure
part of each read model is its ``evolve``/``rows`` function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import asyncpg

R = TypeVar("R")  # the record a projection decodes each message into

Batch = list[tuple[int, R]]  # (stream position, record) in stream order


class Projection(Protocol[R]):
    """Read-only members, so that a class attribute (``tables = ("audit_events",)``,
    ``decode = staticmethod(decode_stored)``) satisfies them as well as an instance's."""

    @property
    def name(self) -> str: ...
    @property
    def stream(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def tables(self) -> tuple[str, ...]: ...
    @property
    def schema_sql(self) -> str: ...
    @property
    def decode(self) -> Callable[[bytes], R]:
        """One message body as this projection's record; raises if it cannot be decoded."""
        ...

    async def apply(self, conn: asyncpg.Connection, batch: Batch[R], schema: str) -> None:
        """Write the batch's rows; ``schema`` is where this runner's tables live (live or
        rebuild)."""
