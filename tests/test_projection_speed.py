"""What made rebuilds faster gives what it replaced, value for value (issue 18): one decode for
the event read models, the stream position read from the reply subject, audit rows with one look
for text PostgreSQL refuses and times already in UTC kept as they are, the tables apart from
their secondary indexes. The read models themselves are compared with rebuilds in
test_projections, test_read_side, test_history_order and test_faults."""

from __future__ import annotations

import datetime as dt
import re

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from events import ENCODER, StoredEvent, decode_stored, milestone_of
from events.attributes import stored_extensions, with_extensions
from projections import PROJECTIONS
from projections.audit import REDACTED, attributes, redacted, row
from projections.audit.queries import FILTERED
from projections.base import Audited, decode_event
from projections.db import stored_time
from projections.parking import Item, position_of
from projections.storable import (
    REPLACEMENT,
    TIME_MAX,
    TIME_MIN,
    integer,
    json_bytes,
    jsonb,
    maybe_text,
    text,
    timestamp,
)

PLANNED = {
    "id": "e1",
    "source": "tests",
    "type": "MilestonePlanned",
    "subject": "milestones.events.p.m",
    "time": "2026-11-24T10:00:00Z",
    "recordedtime": "2026-11-24T10:00:01Z",
    "correlationid": "c",
    "causationid": "c",
    "data": {
        "type": "MilestonePlanned",
        "project_id": "p",
        "milestone_id": "m",
        "name": "Gate",
        "kind": "event",
        "due": "2026-12-24",
    },
}


def body(**changes: object) -> bytes:
    return msgspec.json.encode({**PLANNED, **changes})


def decoded_before(data: bytes) -> StoredEvent:
    """What the audit read model decoded before ``decode_event``: the stored event, then its
    extension attributes from a second pass."""
    stored = decode_stored(data)
    extensions = stored_extensions(data)
    if not extensions:
        return stored
    fields = {name: getattr(stored, name) for name in stored.__struct_fields__}
    return Audited(**fields, extensions=extensions)


BODIES = [
    body(),
    body(actor="ann", principal="svc", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
    body(sourcesubject="x", dataschema="https://example.com/s"),
    with_extensions(body(), {"ticket": "T-42", "n": 3, "flag": True}),
    with_extensions(body(actor="a"), {"nul": None}),  # null: an attribute that is not there
    body(time="2026-11-24T10:00:00+02:00", actor="a\x00b"),
    body(time="0001-01-01T00:00:00+14:00"),  # before year 1 in UTC
    body(recordedtime="9999-12-31T23:59:59-05:00"),  # after year 9999 in UTC
    body(time="2026-11-24T10:00:00"),  # naive: taken as UTC
    body(source="s\x00", correlationid="c\x00", principal="\x00"),
    body(schemaversion=2**40),  # beyond ``integer``: clamped
    body(
        type="StakeholderSubscribed",
        data={
            "type": "StakeholderSubscribed",
            "project_id": "p",
            "stakeholder": "ops",
            "url": "https://hooks.example.com/x",
            "secret": "whsec_" + "k" * 32,
        },
    ),
]


@pytest.mark.parametrize("data", BODIES)
def test_one_decode_for_the_event_read_models_gives_what_the_audit_decoded(data: bytes) -> None:
    now, before = decode_event(data), decoded_before(data)
    assert type(now) is Audited if type(before) is Audited else type(now) is not Audited
    assert msgspec.structs.asdict(now) == msgspec.structs.asdict(before)
    assert row(7, now) == row(7, before)


def test_status_history_and_audit_decode_alike_so_a_runner_decodes_once() -> None:
    decodes = {PROJECTIONS[name].decode for name in ("status", "history", "audit")}
    assert decodes == {decode_event}


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        body(data={"type": "NoSuchEvent", "project_id": "p"}),
        body(schemaversion=99, data={"type": "MilestonePlanned", "project_id": "p"}),
    ],
)
def test_what_does_not_decode_fails_as_decode_stored_fails(data: bytes) -> None:
    with pytest.raises(Exception) as before:
        decode_stored(data)
    with pytest.raises(Exception) as now:
        decode_event(data)
    assert (type(now.value), str(now.value)) == (type(before.value), str(before.value))
    assert Item.decoded(1, "s", data, None, decode_event).error == (
        Item.decoded(1, "s", data, None, decode_stored).error
    )


def row_before(position: int, stored: StoredEvent) -> tuple:
    """The text and time columns of an audit row as ``projections.storable`` stores each."""
    return (
        position,
        text(stored.subject),
        text(stored.type),
        text(stored.id),
        maybe_text(stored.actor),
        text(stored.source),
        timestamp(stored.time),
        timestamp(stored.recordedtime),
        text(stored.correlationid),
        text(stored.causationid),
        integer(stored.schemaversion),
        maybe_text(stored.principal),
    )


@pytest.mark.parametrize("data", BODIES)
def test_audit_rows_store_text_and_times_as_storable_does(data: bytes) -> None:
    stored = decode_event(data)
    r = row(3, stored)
    assert (r[0], r[1], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[14]) == (
        row_before(3, stored)
    )
    # the rest as the functions it writes out give it: the payload redacted, the attributes
    assert r[13] == json_bytes(ENCODER.encode(redacted(stored.data)))
    assert r[15] == (None if (shown := attributes(stored)) is None else jsonb(shown))
    assert (r[2], r[3]) == (stored.data.project_id, milestone_of(stored.data))
    for value in (r[8], r[9]):  # the same instant in UTC, inside asyncpg's range
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 24, 10, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(2026, 11, 24, 10),
        TIME_MIN,
        TIME_MAX,
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC),
    ],
)
def test_stored_time_is_storable_timestamp(value: dt.datetime) -> None:
    assert stored_time(value) == timestamp(value)
    assert stored_time(value).utcoffset() == timestamp(value).utcoffset()


def test_a_webhook_secret_never_reaches_the_audit_row() -> None:
    subscribed = decode_event(BODIES[-1])
    assert subscribed.data.secret is not None
    payload = msgspec.json.decode(row(1, subscribed)[13])
    assert payload["secret"] == REDACTED and b"whsec_" not in row(1, subscribed)[13]


def test_attributes_of_an_event_without_any_are_none_and_jsonb_otherwise() -> None:
    assert row(1, decode_event(body()))[15] is None
    with_ticket = decode_event(with_extensions(body(), {"ticket": "T-42"}))
    assert row(1, with_ticket)[15] == jsonb({"ticket": "T-42"})


@pytest.mark.parametrize(
    "reply, position",
    [
        ("$JS.ACK.MILESTONES.abc.1.98765.12.1733500000000000000.3", 98765),
        ("$JS.ACK.hub.HASH.MILESTONES.abc.1.555.12.1733500000000000000.3.tok", 555),
        ("$JS.ACK._.HASH.MILESTONES.abc.2.777.12.1733500000000000000.0", 777),
    ],
)
def test_the_position_from_the_reply_subject_is_the_metadata_s(reply: str, position: int) -> None:
    msg = Msg(None, subject="milestones.events.p.m", reply=reply, data=b"{}")  # type: ignore[arg-type]
    assert position_of(msg) == position == msg.metadata.sequence.stream


@pytest.mark.parametrize("name", ["status", "history", "audit"])
def test_the_tables_and_their_secondary_indexes_make_the_schema(name: str) -> None:
    p = PROJECTIONS[name]
    table_sql, index_sql = p.table_sql, p.index_sql  # type: ignore[attr-defined]
    assert p.schema_sql == table_sql + index_sql
    statements = [s.strip() for s in index_sql.split(";") if s.strip()]
    assert statements and all(
        "\n".join(ln for ln in s.splitlines() if not ln.startswith("--")).startswith(
            "CREATE INDEX IF NOT EXISTS"
        )
        for s in statements
    )
    assert "CREATE INDEX" not in table_sql and "PRIMARY KEY" in table_sql


REFUSED = re.compile("[\x00\ud800-\udfff]")  # what PostgreSQL refuses in text


@given(st.text(alphabet=st.characters(exclude_categories=())))
@example("plain ascii")
@example("nul\x00here")
@example("lone \ud800 surrogate")
@example("caf\u00e9 \x00")
def test_text_replaces_what_the_search_alone_replaced(value: str) -> None:
    """``text``'s quick look (ASCII without NUL) gives what the search alone gave: NUL and lone
    surrogates replaced."""
    assert text(value) == REFUSED.sub(REPLACEMENT, value)


def _times() -> list[object]:
    """Edges and a spread of times as the projections may be given them: aware in UTC (what
    they write), in other zones, naive (local time to asyncpg), dates, and asyncpg's infinities."""
    import random

    rnd = random.Random(18)
    zones = [dt.UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(-dt.timedelta(hours=12))]
    values: list[object] = [
        dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        TIME_MIN,
        TIME_MAX,
        dt.datetime.max,  # asyncpg's 'infinity'
        dt.datetime.min,  # and '-infinity'
        dt.datetime.max.replace(tzinfo=dt.UTC),  # the same microsecond: 'infinity' too
        dt.datetime.min.replace(tzinfo=dt.UTC),
        dt.datetime(2026, 12, 7, 6, 0, 0, 123456),
        dt.date(2026, 12, 7),
        dt.date(2000, 1, 1),
    ]
    for _ in range(300):
        at = dt.datetime(1, 1, 2, tzinfo=dt.UTC) + dt.timedelta(
            microseconds=rnd.randrange(0, 9998 * 365 * 86400 * 10**6)
        )
        kind = rnd.randrange(4)
        if kind == 0:
            values.append(at)
        elif kind == 1:
            values.append(at.astimezone(rnd.choice(zones[1:])))
        elif kind == 2 and dt.datetime(1900, 1, 1, tzinfo=dt.UTC) < at < TIME_MAX:
            values.append(at.replace(tzinfo=None))  # naive: local time, as asyncpg takes it
        else:
            values.append(at.date())
    return values


async def test_the_projections_timestamptz_codec_is_asyncpgs_value_for_value(db_url):
    """The projections' connections encode ``timestamptz`` with a codec of their own
    (``projections.db._encode_timestamptz``, three times asyncpg's speed for UTC times): every
    value is stored and read back exactly as asyncpg's own codec stores and reads it."""
    import asyncpg

    from projections import db

    ours = await db.connect(db_url, "public")  # where ``theirs`` makes its table
    theirs = await asyncpg.connect(db_url)
    try:
        await theirs.execute("CREATE TABLE times (i int, ours timestamptz, theirs timestamptz)")
        values = _times()
        rows = list(enumerate(values))
        await ours.copy_records_to_table("times", records=rows, columns=["i", "ours"])
        await theirs.executemany("UPDATE times SET theirs = $2 WHERE i = $1", rows)
        differ = await theirs.fetch(
            "SELECT i, ours::text, theirs::text FROM times WHERE ours IS DISTINCT FROM theirs"
        )
        assert [tuple(r) for r in differ] == []
        assert await theirs.fetchval("SELECT count(*) FROM times WHERE theirs IS NULL") == 0
        assert await theirs.fetchval("SELECT count(*) FROM times WHERE ours = 'infinity'") == 2
        # read back: the same values, of the same type and zone (asyncpg's infinities naive)
        in_order = "SELECT ours AS t FROM times ORDER BY i"
        read_ours = [r["t"] for r in await ours.fetch(in_order)]
        read_theirs = [r["t"] for r in await theirs.fetch(in_order)]
        assert read_ours == read_theirs
        assert [x.tzinfo for x in read_ours] == [x.tzinfo for x in read_theirs]
        # and as a query parameter
        assert await ours.fetchval("SELECT $1::timestamptz = $2", values[3], values[3]) is True
        refused = []  # what is not a time: the same error, word for word
        for conn in (ours, theirs):
            with pytest.raises(asyncpg.DataError, match="expected a datetime.date") as caught:
                await conn.fetchval("SELECT $1::timestamptz", "2026-12-07")
            refused.append(str(caught.value))
        assert refused[0] == refused[1]
    finally:
        await ours.close()
        await theirs.close()


@pytest.mark.parametrize("column", FILTERED)
async def test_every_audit_filter_can_use_its_index_whatever_the_value(db_url, column):
    """Each column the audit trail is filtered by has an index the query can use with its value
    as a parameter (a generic plan, as asyncpg's prepared statements get): ``actor`` and
    ``principal`` index only the rows that have one, which an equality always implies."""
    import asyncpg

    from projections.audit.queries import SELECT_EVENTS, AuditFilter

    conn = await asyncpg.connect(db_url, server_settings={"search_path": "milestones"})
    try:
        where, args = AuditFilter(equal={column: "x"}).sql()
        assert args == [0, "x"]  # $1 the position after which, $2 the value
        await conn.execute(
            "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
            f"PREPARE q(bigint, text) AS {SELECT_EVENTS} WHERE {where} ORDER BY position LIMIT 50"
        )
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) EXECUTE q(0, 'x')")
        assert "$2" in str(plan)  # the generic plan: the value not known when planned
        used = {n for n in re.findall(r'"Index Name": "(\w+)"', str(plan))}
        indexed = {c: f"audit_{c.removesuffix('_id')}" for c in FILTERED}
        assert indexed[column] in used, plan
    finally:
        await conn.close()
