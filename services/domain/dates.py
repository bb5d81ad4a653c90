"""Date arithmetic that never raises: every result saturates at ``date.min`` / ``date.max``.

Python's ``date`` ends at 9999-12-31 and ``datetime.astimezone`` raises ``OverflowError`` for
0001-01-01T00:00:00+14:00 (its UTC instant lies in year 0). The intake bounds new values
(1970-01-01 to 2199-12-31), but a log may hold events written before those bounds, and decoding
stored events stays lenient: so the pure core (health, reporting, the deciders' dependency
rules) computes with these instead of ``+ timedelta`` and ``astimezone``. A saturated date is
still the right answer to every question the core asks of it (later than any real date, or
earlier), and the true value stays in the event log.
"""

from __future__ import annotations

import datetime as dt

# The first and last instants whose UTC date is a Python date.
TIME_MIN = dt.datetime.min.replace(tzinfo=dt.UTC)
TIME_MAX = dt.datetime.max.replace(tzinfo=dt.UTC)


def add_days(day: dt.date, days: int) -> dt.date:
    """``day + days``, at ``date.min`` / ``date.max`` when that falls outside Python's dates."""
    ordinal = day.toordinal() + days
    if ordinal < 1:
        return dt.date.min
    if ordinal > dt.date.max.toordinal():
        return dt.date.max
    return dt.date.fromordinal(ordinal)


def utc(moment: dt.datetime) -> dt.datetime:
    """The same instant in UTC (a naive time is taken as UTC), saturated at the ends of
    ``datetime``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:  # its UTC instant is before year 1 or after year 9999
        return TIME_MIN if moment < TIME_MIN else TIME_MAX


def utc_date(moment: dt.datetime) -> dt.date:
    """The UTC calendar day of ``moment`` (saturated, see ``utc``)."""
    return utc(moment).date()
