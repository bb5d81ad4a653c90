"""Real service processes for tests/test_ops.py (and any test that needs one): a ``milestones``
subprocess with its ops port, its environment, HTTP tokens issued into the log, and a TCP front
for PostgreSQL that can stop answering."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from services.app.embedded import EmbeddedNats, free_port
from services.app.settings import Settings
from services.auth.credentials import CredentialStore
from services.auth.principal import Principal
from tests.conftest import TEST_SECRET_KEY, connect, wait_for

BOUND = 10.0  # MILESTONES_SHUTDOWN_TIMEOUT_S's default
MARGIN = 2.0  # the interpreter's own exit, and a busy two-core machine
ISSUER = Principal(id="system:tests", role="admin", via="system")


@dataclass
class Service:
    """One ``milestones`` process; its output goes to a file (a full pipe would block it)."""

    name: str
    proc: subprocess.Popen
    ops: str  # http://127.0.0.1:<ops port>
    log: Path
    stopped_in: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def start(cls, name: str, args: list[str], env: dict[str, str], tmp: Path) -> Service:
        log = tmp / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env={**os.environ, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return cls(name, proc, f"http://127.0.0.1:{env['MILESTONES_OPS_PORT']}", log)

    def events(self) -> list[dict]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def get(self, path: str, **kw) -> httpx.Response | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return await http.get(self.ops + path, **kw)
        except httpx.TransportError:
            return None

    async def ready_is(self, want: int, timeout: float, **expect: bool) -> dict:
        """Wait until /ready answers ``want`` and the named checks are as expected."""
        seen: dict = {}

        async def answered() -> bool:
            r = await self.get("/ready")
            if r is None:
                return False
            seen.update(status=r.status_code, body=r.json())
            checks = seen["body"]["checks"]
            return r.status_code == want and all(
                name in checks and checks[name]["ok"] is ok for name, ok in expect.items()
            )

        try:
            await wait_for(answered, timeout, f"{self.name} /ready {want} {expect}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer {seen}") from None
        return seen["body"]

    async def terminate(self) -> int:
        """SIGTERM; the exit code, and how long the exit took in ``stopped_in``."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, BOUND + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            log = self.log.read_text()[-3000:]
            raise AssertionError(f"{self.name} ignored SIGTERM: {log}") from None
        self.stopped_in = time.monotonic() - started
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def service_env(settings: Settings, tmp: Path, **values: str) -> dict[str, str]:
    return {
        "MILESTONES_NATS_URL": settings.nats_url,
        "MILESTONES_NATS_USER": settings.nats_user or "",
        "MILESTONES_NATS_PASSWORD": settings.nats_password or "",
        "MILESTONES_NATS_SYSTEM_USER": settings.nats_system_user or "",
        "MILESTONES_NATS_SYSTEM_PASSWORD": settings.nats_system_password or "",
        "MILESTONES_NATS_AUTH_FILE": settings.nats_auth_file or "",
        "MILESTONES_SECRET_KEY": TEST_SECRET_KEY,
        "MILESTONES_DATA_DIR": str(tmp),
        "MILESTONES_SCHEDULER": "false",
        "MILESTONES_LOG_FORMAT": "json",
        "MILESTONES_HTTP_PORT": str(free_port()),
        "MILESTONES_OPS_PORT": str(free_port()),
        **values,
    }


async def tokens(nats_server: EmbeddedNats) -> dict[str, str]:
    """HTTP bearer tokens of a reader and a publisher, issued into the log before the
    services start (they load the credentials at start)."""
    nc = await connect(nats_server)
    try:
        from services.app.wiring import prepare_streams

        await prepare_streams(nc, Settings())
        store = CredentialStore(nc)
        await store.start()
        reader = await store.issue("reader", name="scraper", by=ISSUER)
        publisher = await store.issue("publisher", sources=["tests"], by=ISSUER)
        await store.stop()
    finally:
        await nc.close()
    return {"reader": reader.http_token, "publisher": publisher.http_token}


class PgProxy:
    """A TCP front for the test PostgreSQL that can stop answering: ``freeze`` keeps every
    connection open and accepts new ones but forwards nothing (a database host gone from the
    network: the nastiest case for a bounded shutdown, since nothing fails fast)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        if host.startswith("/"):  # embedded PostgreSQL: a unix socket
            socket_file = next(Path(host).glob(".s.PGSQL.*"))
            self.open = lambda: asyncio.open_unix_connection(str(socket_file))
        else:
            self.open = lambda: asyncio.open_connection(host, parts.port or 5432)
        self.upstream = parts
        self.frozen = False
        self.pipes: list[asyncio.Task] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> PgProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        user = self.upstream.username or "postgres"
        return urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", self.upstream.path, "", ""))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.frozen:
            return
        up_reader, up_writer = await self.open()
        self.writers.append(up_writer)
        self.pipes += [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(3600)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def freeze(self) -> None:
        self.frozen = True

    async def close(self) -> None:
        for task in self.pipes:
            task.cancel()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


class Recorder:
    """Stands in for a module's structlog logger: keeps (level, event, fields)."""

    def __init__(self, lines: list | None = None, **fields: object) -> None:
        self.lines: list[tuple[str, str, dict]] = [] if lines is None else lines
        self.fields = fields

    def bind(self, **fields: object) -> Recorder:
        return Recorder(self.lines, **self.fields, **fields)

    def __getattr__(self, level: str):
        def record(event: str, **fields: object) -> None:
            self.lines.append((level, event, {**self.fields, **fields}))

        return record


async def true(value: bool) -> bool:
    """``wait_for``'s predicate over a plain condition."""
    return value
