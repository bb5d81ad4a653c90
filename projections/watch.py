"""Read-your-writes: each projection's position, pushed by NOTIFY from the runners' transactions.

Queries wait on it for a ``min_position`` the intake answered; the notifier waits on it before it
decides on a batch.
"""

from __future__ import annotations

import asyncio

import asyncpg

from projections import db


class CheckpointWatcher:
    """Projection positions, pushed by NOTIFY from the runners' transactions (polled as a
    fallback)."""

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
            self.positions[r["projection"]] = max(
                self.positions.get(r["projection"], 0), r["position"]
            )

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        name, _, pos = str(payload).rpartition(":")  # "<projection>:<position>", a str
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
