"""``/ready``: is this process able to do its work now? NATS connected; the database reachable
(a bounded ``SELECT 1``) where the process uses one; every projection runner and supervised task
alive and making progress. Each check says why it fails, so an operator reads the answer.

The checks are filled in as the wiring starts things (``attach``); until then the answer is
"starting". The ops listener starts before the services so liveness answers during start-up."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import asyncpg
from nats.aio.client import Client as NATS
from prometheus_client import Gauge

from services.app.supervise import Supervisor, TaskState
from services.auth.principal import Principal

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

    from projections.runner import Runner

READY = Gauge("milestones_ready", "1 when the last /ready answered ready, else 0")
READY_CHECK = Gauge(
    "milestones_ready_check", "1 when the check passed at the last /ready", ["check"]
)

Check = dict[str, Any]  # {"ok": bool, "detail": str}


class Readiness:
    def __init__(self, *, db_timeout: float = 2.0, stall_after: float = 30.0) -> None:
        self.db_timeout = db_timeout
        self.stall_after = stall_after  # a runner with work pending and no progress this long
        self.nc: NATS | None = None
        self.broker: NatsBroker | None = None
        self.dsn: str | None = None
        self.supervisor: Supervisor | None = None
        self.runners: list[Runner] = []
        self.started = False
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    def attach(
        self,
        *,
        nc: NATS,
        broker: NatsBroker | None,
        supervisor: Supervisor,
        dsn: str | None,
        runners: list[Runner],
    ) -> None:
        self.nc, self.broker, self.supervisor = nc, broker, supervisor
        self.dsn, self.runners = dsn, runners
        self.started = True

    async def check(self) -> tuple[bool, dict[str, Check]]:
        if not self.started or self.nc is None or self.supervisor is None:
            checks = {"startup": _check(False, "the services are starting")}
        else:
            checks = {"nats": _check(*self._nats())}
            if self.dsn is not None:
                checks["database"] = _check(*await self._database())
            now = time.monotonic()
            states = dict(self.supervisor.states)
            for runner in self.runners:  # a check per read model, of the runner it is in
                task = states.pop(f"projection-{runner.checkpoint}", None)
                for lane in runner.lanes:
                    checks[f"projection:{lane.checkpoint}"] = _check(
                        *runner_ready(runner, task, now, self.stall_after, lane.position)
                    )
            for name, state in states.items():
                if name != "ops-http":  # answering this request is its check
                    checks[f"task:{name}"] = _check(*state.ready(now))
        ready = all(c["ok"] for c in checks.values())
        READY.set(1 if ready else 0)
        for name, c in checks.items():
            READY_CHECK.labels(name).set(1 if c["ok"] else 0)
        return ready, checks

    def _nats(self) -> tuple[bool, str]:
        nc = self.nc
        assert nc is not None
        if not nc.is_connected:
            state = "reconnecting" if nc.is_reconnecting else "closed" if nc.is_closed else "down"
            last = f": {nc.last_error!r}" if nc.last_error else ""
            return False, f"not connected ({state}){last}"
        if self.broker is not None and not _broker_connected(self.broker):
            return False, "the query handlers' connection is not connected (reconnecting)"
        url = nc.connected_url
        return True, f"connected to {url.hostname}:{url.port}" if url else "connected"

    async def _database(self) -> tuple[bool, str]:
        async with self._lock:
            try:
                return await asyncio.wait_for(self._select_one(), self.db_timeout + 0.5)
            except Exception as exc:  # noqa: BLE001 - every failure is an answer here
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.terminate()
                detail = str(exc) or type(exc).__name__
                return False, f"unreachable within {self.db_timeout:g}s: {detail}"

    async def _select_one(self) -> tuple[bool, str]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.dsn,
                timeout=self.db_timeout,
                server_settings={"application_name": "milestones-ready"},
            )
        await self._conn.fetchval("SELECT 1", timeout=self.db_timeout)
        return True, "reachable"

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 1.0)
            except Exception:  # noqa: BLE001 - closing only
                conn.terminate()


def runner_ready(
    runner: Runner,
    task: TaskState | None,
    now: float,
    stall_after: float,
    position: int | None = None,
) -> tuple[bool, str]:
    """A runner is ready when its supervised task runs and its own state says so (active and
    making progress, or a standby while another process holds the projection)."""
    if task is not None and not task.running:
        return task.ready(now)
    state = runner.state
    ok, why = state.ready(now, stall_after)
    if ok and not why:
        if state.active:
            why = f"active at position {state.position if position is None else position}"
        elif state.standby:
            why = "standby: another process holds this projection"
        else:
            why = f"reconnecting after: {state.last_error}"
    return ok, why


def _broker_connected(broker: NatsBroker) -> bool:
    try:
        return bool(broker.connection.is_connected)
    except Exception:  # noqa: BLE001 - not connected yet, or closed
        return False


def _check(ok: bool, detail: str) -> Check:
    return {"ok": ok, "detail": detail}


class LateAuthenticator:
    """The ops listener starts before the credentials are loaded: until they are, no bearer
    token is known (``/metrics`` answers 401; ``/health`` and ``/ready`` need none)."""

    def __init__(self) -> None:
        self.inner: Any = None

    async def bearer(self, token: str) -> Principal | None:
        return await self.inner.bearer(token) if self.inner is not None else None

    def by_credential(self, credential_id: str) -> Principal | None:
        return self.inner.by_credential(credential_id) if self.inner is not None else None

    def by_nats_account(self, account: str) -> Principal | None:
        return self.inner.by_nats_account(account) if self.inner is not None else None
