"""What every query shares: the answer envelopes, parameter parsing with messages that say what
to fix, keyset cursors, and read-your-writes (``CheckpointWatcher``)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from events.common import ID_PATTERN
from projections import db
from services.domain.errors import Rejected

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


def p_choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
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
        values = msgspec.json.decode(base64.urlsafe_b64decode(str(raw) + "=" * (-len(str(raw)) % 4)))
        assert isinstance(values, list)
        return values
    except Exception:
        raise bad("cursor is not one this API handed out: pass next_cursor unchanged") from None


# -- read-your-writes -------------------------------------------------------------------------------
class CheckpointWatcher:
    """Projection positions, pushed by NOTIFY from the runners' transactions (polled as a fallback)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.positions: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._conn = await db.connect(self.dsn)
        await self._conn.add_listener(db.NOTIFY_CHANNEL, self._on_notify)
        await self.refresh()

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def refresh(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = conn = await db.connect(self.dsn)
            await conn.add_listener(db.NOTIFY_CHANNEL, self._on_notify)
        for r in await conn.fetch(f"SELECT projection, position FROM {db.SCHEMA}.checkpoints"):
            self.positions[r["projection"]] = max(self.positions.get(r["projection"], 0), r["position"])

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        name, _, pos = payload.rpartition(":")
        self.positions[name] = max(self.positions.get(name, 0), int(pos))
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, projection: str, min_position: int, timeout: float) -> tuple[int, bool]:
        """(position, reached). Waits at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.positions.get(projection, 0) < min_position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self.positions.get(projection, 0), False
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))
                except TimeoutError:
                    await self.refresh()  # a missed notification (reconnect) costs at most 250 ms
        return self.positions.get(projection, 0), True
