"""What every query shares: the answer envelopes, parameter parsing with messages that say what
to fix, and keyset cursors."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from events.common import ID_PATTERN
from events.errors import Rejected

ID = re.compile(ID_PATTERN)
MAX_LIMIT = 1000
MAX_WAIT = 30.0


class One(msgspec.Struct, omit_defaults=True):
    data: Any
    position: int
    stale: bool = False


class Page(msgspec.Struct, omit_defaults=True):
    data: list[Any]
    position: int
    next_cursor: str | None = None
    stale: bool = False


# -- parameters -------------------------------------------------------------------------------------
def bad(message: str) -> Rejected:
    return Rejected("invalid", message)


def p_int(params: Mapping[str, Any], name: str, default: int, lo: int = 0, hi: int = 2**62) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise bad(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise bad(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def p_date(params: Mapping[str, Any], name: str) -> dt.date | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(raw))
    except ValueError:
        raise bad(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None


def p_time(params: Mapping[str, Any], name: str) -> dt.datetime | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise bad(f"{name} must be an RFC 3339 time, got {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def p_choice(
    params: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str | None = None
) -> str | None:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    if raw not in choices:
        raise bad(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return str(raw)


def p_list(params: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> list[str] | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    values = [v.strip() for v in str(raw).split(",") if v.strip()]
    wrong = [v for v in values if v not in choices]
    if wrong:
        raise bad(f"{name} accepts {', '.join(choices)} (comma-separated), not {', '.join(wrong)}")
    return values


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")


def decode_cursor(params: Mapping[str, Any]) -> list[Any] | None:
    raw = params.get("cursor")
    if raw in (None, ""):
        return None
    try:
        values = msgspec.json.decode(
            base64.urlsafe_b64decode(str(raw) + "=" * (-len(str(raw)) % 4))
        )
        assert isinstance(values, list)
        return values
    except Exception:
        raise bad("cursor is not one this API handed out: pass next_cursor unchanged") from None
