"""Ready means answering: a process's own listeners asked for ``/health`` until each answers.

A listening socket accepts connections before uvicorn serves them (they wait in the backlog), so
"bound" is not "answering"; `milestones dev` says ready only once a request gets a response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger("milestones")

WITHIN = 15.0  # seconds the listeners get to answer before it is said they did not
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # a wildcard: ask on loopback


async def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``GET /health`` on ``host:port`` gets an HTTP response."""
    host = LOOPBACK.get(host, host)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        return status.startswith(b"HTTP/1.1 ")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def when_answering(
    listeners: Sequence[tuple[str, int]],
    stop: asyncio.Event,
    callback: Callable[[], object] | None,
    within: float = WITHIN,
) -> asyncio.Task | None:
    """Call ``callback`` once every listener answers; a task that ends on ``stop`` too."""
    if callback is None:
        return None

    async def wait() -> None:
        deadline = asyncio.get_running_loop().time() + within
        pending = list(listeners)
        while pending and not stop.is_set():
            pending = [(h, p) for h, p in pending if not await answers(h, p)]
            if pending and asyncio.get_running_loop().time() > deadline:
                log.warning("listeners did not answer in time", listeners=pending, within_s=within)
                return
            if pending:
                await asyncio.sleep(0.02)  # polling our own listeners, with a deadline
        if not stop.is_set():
            callback()

    task = asyncio.create_task(wait(), name="ready-probe")
    _probing.add(task)  # the loop keeps only a weak reference
    task.add_done_callback(_retrieved)
    return task


_probing: set[asyncio.Task] = set()


def _retrieved(task: asyncio.Task) -> None:
    _probing.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("ready probe failed", error=repr(error))
