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
import msgspec

from events import AnyEvent, StoredEvent, decode_stored
from events.attributes import stored_extensions

R = TypeVar("R")  # the record a projection decodes each message into

Batch = list[tuple[int, R]]  # (stream position, record) in stream order


class Projection(Protocol[R]):
    """Read-only members, so that a class attribute (``tables = ("audit_events",)``,
    ``decode = staticmethod(decode_event)``) satisfies them as well as an instance's."""

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
        rebuild: a rebuild's tables are its own, written by its runner alone, which a read model
        may use to write them faster, as status does with COPY)."""


# Optional members, read with getattr by whoever builds tables: ``table_sql`` and ``index_sql``,
# the tables and their secondary indexes, ``schema_sql`` being the two in that order. A rebuild
# may create the tables, load them, and only then their secondary indexes (building an index
# once is about twice as fast as keeping it up to date row by row: measured on audit_events).
#
# A read model may keep state between a rebuild's batches (status holds its rows in memory,
# ``projections.status.held``) with three more: ``for_rebuild()``, the read model for one rebuild
# (state of that rebuild alone); ``committed()`` and ``rolled_back()``, called by the runner's
# lane when a batch's transaction ends (what ``apply`` staged is kept, or forgotten); and
# ``async flush(conn, schema)``, called by the rebuild once it has caught up, before its indexes
# and again inside the swap, to write what it holds.


class Audited(StoredEvent, frozen=True, kw_only=True):
    """A stored event with the CloudEvent attributes it carries beyond ``StoredEvent``'s (the
    publisher's extension attributes, at the top level of the stored JSON)."""

    extensions: dict[str, object]


class _Closed(
    StoredEvent, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """A stored event with no member ``StoredEvent`` does not name: no extension attributes."""

    data: AnyEvent


_CLOSED = msgspec.json.Decoder(_Closed)


def decode_event(body: bytes) -> StoredEvent:
    """The record of the event read models (status, history, audit): one function, so that a
    runner of several decodes each message once (``lane.Decoded``). The stored event, an
    ``Audited`` one when it carries extension attributes.

    One pass for what most events are, a stored event with no member beyond ``StoredEvent``'s
    (decoded as ``decode_stored`` decodes it, refusing unknown members); anything else (an
    extension attribute, another schema version, an event that does not decode) goes the whole
    way: ``decode_stored``, then the extension attributes."""
    try:
        return _CLOSED.decode(body)
    except msgspec.DecodeError:
        pass
    stored = decode_stored(body)
    extensions = stored_extensions(body)
    if not extensions:
        return stored
    fields = {name: getattr(stored, name) for name in stored.__struct_fields__}
    return Audited(**fields, extensions=extensions)
