"""The import's events as CloudEvents (structured JSON), in batches the intake takes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from events import ENCODER
from services.plans.mapping import Outgoing

BATCH_MARGIN = 1024  # bytes kept free under the intake's message limit (the JSON array)


def cloudevent(o: Outgoing, source: str, time: dt.datetime) -> dict[str, Any]:
    data = msgspec.to_builtins(o.event)
    return {
        "specversion": "1.0",
        "id": o.id,
        "source": source,
        "type": data.pop("type"),
        "time": time.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def batches(events: list[dict[str, Any]], most: int, max_bytes: int) -> list[tuple[int, bytes]]:
    """JSON arrays of at most ``most`` CloudEvents and ``max_bytes`` bytes, in order, each with
    how many it holds."""
    out_: list[tuple[int, bytes]] = []
    chunk: list[bytes] = []
    size = 2
    for event in events:
        body = ENCODER.encode(event)
        if chunk and (len(chunk) >= most or size + len(body) + 1 > max_bytes - BATCH_MARGIN):
            out_.append((len(chunk), b"[" + b",".join(chunk) + b"]"))
            chunk, size = [], 2
        chunk.append(body)
        size += len(body) + 1
    if chunk:
        out_.append((len(chunk), b"[" + b",".join(chunk) + b"]"))
    return out_
