"""Values as PostgreSQL can hold them, so that every event that decodes can be projected.

The intake bounds what it accepts (no NUL or control characters, integers within ``integer``,
dates and times 1970-01-01 to 2199-12-31), but a log may hold events written before those
bounds, and decoding stored events stays lenient. What PostgreSQL (or asyncpg) refuses, and
what the read models store instead:

- NUL in text: ``text`` and ``jsonb`` refuse it ("invalid byte sequence", "\\u0000 cannot be
  converted to text"). Stored as U+FFFD (the Unicode replacement character), so the row says
  that a character was there and could not be kept; the log keeps the original bytes.
- Integers beyond ``integer`` (a milestone's ``order`` of 2^40): clamped to the column's range.
  The column stays ``integer``: the contract bounds ``order`` to it, so the read model keeps
  the contract's type; an order is a sort key, and a clamped one still sorts after (or before)
  every order the contract allows. Widening to ``bigint`` would not end the question (msgspec
  decodes integers of any size) and would change the schema of every deployed database.
- Times whose UTC instant lies outside Python's years 1-9999 (0001-01-01T00:00:00+14:00):
  asyncpg converts to UTC and raises. Saturated a day inside the ends, because asyncpg reads
  PostgreSQL's ``infinity`` back as a naive ``datetime.max`` that no aware time compares with.
- Dates need nothing: PostgreSQL's ``date`` reaches 5874897 AD, and asyncpg stores
  ``date.max`` / ``date.min`` as ``infinity`` / ``-infinity`` and reads them back as the same
  dates.
"""

from __future__ import annotations

import datetime as dt
import re

import msgspec

REPLACEMENT = "\ufffd"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
TIME_MIN = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
TIME_MAX = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)

_REFUSED = re.compile("[\x00\ud800-\udfff]")  # NUL, and lone surrogates (not UTF-8 at all)
# A NUL escaped in JSON: ``\u0000`` after an even number of backslashes (an odd number means the
# backslash itself was escaped, and "u0000" is plain text).
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_JSON = msgspec.json.Encoder()


def text(value: str) -> str:
    """Text with what PostgreSQL cannot store replaced by U+FFFD."""
    if value.isascii() and "\x00" not in value:  # most text: no surrogate can be there, and
        return value  # both checks are a flag and a memchr (the search took ~1.4 us for 120 chars)
    return _REFUSED.sub(REPLACEMENT, value) if _REFUSED.search(value) else value


def maybe_text(value: str | None) -> str | None:
    return None if value is None else text(value)


def integer(value: int) -> int:
    """Within PostgreSQL's ``integer``."""
    return min(INT_MAX, max(INT_MIN, value))


def timestamp(value: dt.datetime) -> dt.datetime:
    """The same instant in UTC (a naive time taken as UTC), saturated inside asyncpg's range."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=dt.UTC)
    if value < TIME_MIN:
        return TIME_MIN
    if value > TIME_MAX:
        return TIME_MAX
    return value.astimezone(dt.UTC)


def maybe_timestamp(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else timestamp(value)


def json_bytes(body: bytes) -> bytes:
    """Encoded JSON that ``jsonb`` accepts: every escaped NUL becomes an escaped U+FFFD."""
    return _JSON_NUL.sub(rb"\1\\ufffd", body) if b"\\u0000" in body else body


def jsonb(value: object) -> bytes:
    """``value`` encoded for a ``jsonb`` column (the codec takes bytes as they are)."""
    return json_bytes(_JSON.encode(value))
