"""Value bounds at the intake: every accepted event can be stored, projected and shown.

Only the intake checks them (``check_struct``, ``check_data``, ``json_too_deep``); the
stored-event decoders do not, so a log written before these bounds (a 9999-12-31 due date, a NUL
in a name, an ``order`` of 2^40) still decodes. That is why the bounds are not msgspec ``Meta``
constraints, which would apply to every decode: the types carry them only as
``extra_json_schema`` (the exported JSON Schema says them, nothing validates with them) and as
``extra`` markers read here.

| value | bound |
| --- | --- |
| dates | 1970-01-01 to 2199-12-31 |
| times | 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z (the end of 2199-12-31), in UTC |
| text | no control character (U+0000-U+001F, U+007F-U+009F); multi-line text (notes, reasons) may hold tab, line feed and carriage return |
| integers | PostgreSQL ``integer``: -2^31 to 2^31-1 |
| ``completed_at``, ``achieved_at``, ``reached_at``, ``set_at``, ``approved_at``, ``rejected_at`` | no later than the CloudEvent ``time`` + ``CLOCK_SKEW`` |
| dependency lag | -365 (a lead) to 3,650 days (``events.common.LagDays``) |
| JSON nesting | at most ``MAX_JSON_DEPTH`` levels |
"""  # noqa: E501

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from operator import attrgetter
from typing import Any

import msgspec
import msgspec.inspect as mi

DATE_MIN = dt.date(1970, 1, 1)
DATE_MAX = dt.date(2199, 12, 31)
TIME_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The end of DATE_MAX: the deadline of a milestone due 2199-12-31 fires at this instant.
TIME_MAX = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # PostgreSQL integer: what the read models store
LAG_MIN, LAG_MAX = -365, 3650
# How far a payload's "when it happened" may lie after the CloudEvent's own time: publishers'
# clocks drift and a message may be stamped a moment before the work is recorded, but a fact
# cannot be reported before it happened.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Nesting of any JSON body: a CloudEvent batch with goals lists is 4 deep; unknown extension
# attributes may add some. Deeper bodies are refused before msgspec recurses into them.
MAX_JSON_DEPTH = 32

# ECMA-262 and Python read these patterns alike (the JSON Schema shows them as they are).
LINE_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
MULTILINE_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
YEAR_PATTERN = "^(19[7-9][0-9]|2[01][0-9]{2})-"  # 1970-2199: a first filter, the range is exact
TIME_YEAR_PATTERN = "^(19[6-9][0-9]|2[01][0-9]{2}|2200)-"  # offsets may cross a year's end
# ``events.common.Url`` decodes with ``^https?://\\S{1,2000}$``; the intake also refuses control
# characters (``\\S`` matches NUL): the schema shows this one.
URL_PATTERN = "^https?://[^\\s\\u0000-\\u001f\\u007f-\\u009f]{1,2000}$"

_LINE_BAD = re.compile("[\\u0000-\\u001f\\u007f-\\u009f]")
_MULTILINE_BAD = re.compile("[\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]")
# ``extra={TEXT: ...}`` markers on string types: text that may hold line breaks, and text whose
# decode pattern already refuses control characters (ids)
TEXT = "text"
MULTILINE = "multiline"
CONTROL_FREE = "control-free"

TEXT_RULE = "text may not hold control characters (U+0000-U+001F, U+007F-U+009F)"
MULTILINE_RULE = f"{TEXT_RULE} other than tab, line feed and carriage return"
DATE_RULE = f"dates from {DATE_MIN} to {DATE_MAX}"
TIME_RULE = (
    "times from 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z (the end of 2199-12-31), "
    "after conversion to UTC"
)
INT_RULE = f"integers from {INT_MIN} to {INT_MAX} (PostgreSQL integer)"
# Payload fields that say when the fact happened (absent: the CloudEvent time).
HAPPENED_AT = (
    "completed_at",
    "achieved_at",
    "reached_at",
    "set_at",
    "approved_at",
    "rejected_at",
)


class OutOfBounds(ValueError):
    """A value outside the intake's bounds; ``path`` is a JSON path, ``detail`` what to fix."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"`{path}` {detail}")
        self.path = path
        self.detail = detail


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether valid JSON ``body`` nests arrays and objects more than ``limit`` deep.

    Byte operations only (a Python loop over a 64 KiB body costs milliseconds): escaped
    backslashes and quotes go first, then everything but quotes and brackets, then the strings
    (no escapes are left, so quotes pair up), and each pass removes the innermost pairs."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # too few openers to nest deeper
    s = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    s = b"".join(s.split(b'"')[::2]).replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(limit):
        if not s:
            return False
        s = s.replace(b"[]", b"")
    return bool(s)


_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')


def check_text(path: str, value: str, multiline: bool = False) -> None:
    bad = (_MULTILINE_BAD if multiline else _LINE_BAD).search(value)
    if bad is not None:
        char = f"U+{ord(bad.group()):04X}"
        rule = MULTILINE_RULE if multiline else TEXT_RULE
        raise OutOfBounds(path, f"holds {char} at character {bad.start()}: {rule}")


def check_time(path: str, value: dt.datetime) -> dt.datetime:
    """The value in UTC, if within bounds."""
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or not TIME_MIN <= utc <= TIME_MAX:
        raise OutOfBounds(path, f"is {value.isoformat()}: {TIME_RULE}")
    return utc


def _check_value(path: str, value: Any, multiline: bool) -> None:
    # datetime before date (a subclass), bool before int (a subclass)
    if isinstance(value, str):
        check_text(path, value, multiline)
    elif isinstance(value, dt.datetime):
        check_time(path, value)
    elif isinstance(value, dt.date):
        if not DATE_MIN <= value <= DATE_MAX:
            raise OutOfBounds(path, f"is {value.isoformat()}: {DATE_RULE}")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise OutOfBounds(path, f"is {value}: {INT_RULE}")
    elif isinstance(value, msgspec.Struct):
        check_struct(value, path)
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, multiline)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(f"{path}.<key>", key, False)
            _check_value(f"{path}.{key}", item, multiline)


def check_struct(value: msgspec.Struct, path: str = "$") -> None:
    """Every field of a decoded struct (nested ones too) within the bounds. A plan per struct
    type (from its type information) says what each field needs: the common case is one regex
    search over the struct's text fields together, and nothing per id or literal."""
    plan = _plan(type(value))
    for names, get, bad, multiline in plan.texts:
        texts = get(value)
        if bad.search("".join(filter(None, texts if len(names) > 1 else (texts,)))):
            for name in names:  # find the culprit, for the message
                item = getattr(value, name)
                if item is not None:
                    check_text(f"{path}.{name}", item, multiline)
    for name, multiline in plan.walk:
        item = getattr(value, name)
        if item is not None:
            _check_value(f"{path}.{name}", item, multiline)


@dataclass(frozen=True, slots=True)
class _Plan:
    # (names, their getter, the forbidden characters, multiline) per kind of text
    texts: tuple[tuple[tuple[str, ...], Callable[[Any], Any], re.Pattern[str], bool], ...]
    walk: tuple[tuple[str, bool], ...]  # the other fields to check, and whether multiline
    happened: tuple[str, ...]  # its fields of ``HAPPENED_AT``


_LINE, _MULTI, _WALK, _WALK_MULTI = "line", "multiline", "walk", "walk-multiline"


@cache
def _plan(cls: type) -> _Plan:
    info = mi.type_info(cls)
    fields = info.fields if isinstance(info, mi.StructType) else ()
    kinds = [(f.name, _kind(f.type)) for f in fields]
    texts = []
    for kind, bad in ((_LINE, _LINE_BAD), (_MULTI, _MULTILINE_BAD)):
        names = tuple(n for n, k in kinds if k == kind)
        if names:
            texts.append((names, attrgetter(*names), bad, kind == _MULTI))
    walk = tuple((n, k == _WALK_MULTI) for n, k in kinds if k in (_WALK, _WALK_MULTI))
    happened = tuple(n for n, _ in kinds if n in HAPPENED_AT)
    return _Plan(tuple(texts), walk, happened)


def _kind(t: mi.Type) -> str | None:
    """What a field of type ``t`` needs checked: None (nothing: ids, literals, raw data)."""
    extra: dict = {}
    while isinstance(t, mi.Metadata):
        extra |= t.extra or {}
        t = t.type
    if isinstance(t, mi.UnionType):
        kinds = {_kind(u) for u in t.types if not isinstance(u, mi.NoneType)}
        return kinds.pop() if len(kinds) == 1 else (_WALK_MULTI if _marked(t) else _WALK)
    if isinstance(t, mi.StrType):
        if extra.get(TEXT) == CONTROL_FREE:
            return None
        return _MULTI if extra.get(TEXT) == MULTILINE else _LINE
    if isinstance(t, mi.LiteralType | mi.BoolType | mi.NoneType | mi.RawType):
        return None
    return _WALK_MULTI if _marked(t) else _WALK


def check_data(fact: msgspec.Struct, time: dt.datetime) -> None:
    """A CloudEvent's decoded data within the bounds, and its "when it happened" fields no
    later than the CloudEvent ``time`` (already checked) plus ``CLOCK_SKEW``."""
    check_struct(fact)
    for name in _plan(type(fact)).happened:
        at = getattr(fact, name)
        if at is not None and at.astimezone(dt.UTC) > time.astimezone(dt.UTC) + CLOCK_SKEW:
            raise OutOfBounds(
                f"$.{name}",
                f"is {at.isoformat()}, after the CloudEvent's time {time.isoformat()}: "
                f"a fact is reported after it happened (allowed skew: "
                f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes); fix the time or {name}",
            )


def _marked(t: mi.Type) -> bool:
    if isinstance(t, mi.Metadata):
        return (t.extra or {}).get(TEXT) == MULTILINE or _marked(t.type)
    if isinstance(t, mi.UnionType):
        return any(_marked(u) for u in t.types)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _marked(t.item_type)
    return False
