"""The servers and service processes of a benchmark run, and how each client logs in.

A secured NATS server (the services' identity, an accounts file the intake keeps in sync) is run
as production runs it: the service processes get the services' identity through their
environment, the load comes through a publisher credential (mapped to its account slot by the
server), queries carry a reader's bearer token (an auditor's for the audit trail), and only
raw-limit measurements and stream reads use the services' own identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from bench.http import Connection
from events.subjects import command_subject
from services.app.embedded import EmbeddedNats, free_port
from services.auth.credentials import CredentialStore, Issued
from services.auth.identity import ServiceIdentity
from services.auth.principal import Principal, Role

SOURCE = "bench"  # the CloudEvent source of every workload message (bench.workload)
BENCH = Principal(id="system:milestones-bench", role="admin", via="system")


@dataclass(frozen=True)
class NatsTarget:
    """A NATS server of the run and the services' login to it."""

    url: str
    identity: ServiceIdentity | None = None  # None: an anonymous server
    auth_file: str | None = None  # the accounts file the intake rewrites (publisher logins)
    server: EmbeddedNats | None = None  # when started here: its process's CPU can be read

    @classmethod
    def embedded(cls, server: EmbeddedNats) -> NatsTarget:
        if server.identity is None:
            return cls(server.url, server=server)
        return cls(server.url, server.identity, str(server.credentials_file), server)

    @property
    def secured(self) -> bool:
        """Publishers and readers can get credentials of their own (else they share the
        services' login, or none)."""
        return self.identity is not None and self.auth_file is not None

    def env(self) -> dict[str, str]:
        env = {"MILESTONES_NATS_URL": self.url}
        if self.identity is not None:
            env["MILESTONES_NATS_USER"] = self.identity.service.user
            env["MILESTONES_NATS_PASSWORD"] = self.identity.service.password
            if self.auth_file is not None:  # the intake keeps the server's accounts in sync
                env["MILESTONES_NATS_SYSTEM_USER"] = self.identity.system.user
                env["MILESTONES_NATS_SYSTEM_PASSWORD"] = self.identity.system.password
                env["MILESTONES_NATS_AUTH_FILE"] = self.auth_file
        return env

    async def services(self, name: str = "milestones-bench") -> NATS:
        """A connection with the services' own identity: raw limits, stream reads, issuing."""
        login = self.identity.service if self.identity is not None else None
        return await nats.connect(
            self.url,
            name=name,
            user=login.user if login else None,
            password=login.password if login else None,
        )


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def peak_rss_mb(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (``/proc/<pid>/stat``, fields 14 and
    15, in clock ticks; the name in field 2 may hold spaces, so count after its ``)``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    """Service processes of one run, on one NATS server (and database, where they need one)."""

    target: NatsTarget
    database_url: str | None
    http_port: int
    work: Path
    services: dict[str, Service] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        # an identity inherited from the caller's environment must not leak into this stack
        env = {k: v for k, v in os.environ.items() if not k.startswith("MILESTONES_NATS_")}
        env.update(
            self.target.env(),
            MILESTONES_HTTP_PORT=str(self.http_port),
            MILESTONES_LOG_FORMAT="json",
            MILESTONES_LOG_LEVEL="warning",
        )
        if self.database_url:
            env["MILESTONES_DATABASE_URL"] = self.database_url
        return env

    def start(self, name: str, *args: str, module: str = "services.cli") -> Service:
        """``python -m <module> <args>`` with this stack's environment: a service process
        (``milestones serve ...``), or a ceiling's stand-in for one (``bench.echo``)."""
        log = self.work / f"{name}.log"
        # each service process serves /health, /ready and /metrics on a port of its own
        env = {**self.env(), "MILESTONES_OPS_PORT": str(free_port())}
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.services[name] = Service(name, proc, log)
        return self.services[name]

    def check_alive(self) -> None:
        for s in self.services.values():
            if s.proc.poll() is not None:
                raise RuntimeError(
                    f"service {s.name} exited ({s.proc.returncode}): {s.log.read_text()[-2000:]}"
                )

    def stop(self) -> None:
        for s in reversed(list(self.services.values())):
            s.stop()


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, stack: Stack | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if stack:
            stack.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def ready(stack: Stack, services: NATS) -> None:
    """The intake answers (asked inside the services' account) and the query service is up."""

    async def intake_answers() -> bool:
        try:
            await services.request(command_subject("ProjectCreated"), b"{}", timeout=0.5)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    async def query_answers() -> bool:
        conn = Connection("127.0.0.1", stack.http_port)
        try:
            return (await conn.get("/health"))[0] == 200
        except OSError:
            return False
        finally:
            await conn.close()

    await until(intake_answers, 60, "the intake", stack)
    if "query" in stack.services:
        await until(query_answers, 60, "the query service", stack)


@dataclass
class Clients:
    """How the load reaches the services: one NATS connection for every publisher of the
    workload, and bearer tokens for HTTP by role (empty where nothing checks them)."""

    publisher: NATS
    tokens: dict[str, str] = field(default_factory=dict)

    async def close(self) -> None:
        await self.publisher.close()


async def clients(stack: Stack, services: NATS, *, http_roles: tuple[Role, ...] = ()) -> Clients:
    """On a secured server: a publisher credential for the workload's source (and one
    credential per role of ``http_roles``), issued in the log as an admin would, once the
    server lets the publisher log in and the query service knows the tokens. Elsewhere the
    publisher connects as the services do (anonymous on an unsecured server): every message is
    then the services' own."""
    target = stack.target
    if not target.secured:
        return Clients(await target.services("milestones-bench-publisher"))
    store = CredentialStore(services)
    await store.start()
    try:
        publisher = await store.issue("publisher", name=SOURCE, sources=[SOURCE], by=BENCH)
        tokens: dict[str, str] = {
            role: (await store.issue(role, name=SOURCE, by=BENCH)).http_token for role in http_roles
        }
    finally:
        await store.stop()
    connection = await _login(stack, publisher)
    for role, token in tokens.items():
        await _bearer_known(stack, role, token)
    return Clients(connection, tokens)


async def _login(stack: Stack, issued: Issued, timeout: float = 30) -> NATS:
    """The publisher's connection, once the intake has written its account and the server has
    reloaded: until then the server refuses the login."""
    login = {"user": issued.credential.id, "password": issued.secret}

    async def quiet(_exc: Exception) -> None:  # refusals are expected until the reload
        pass

    async def accepted() -> bool:
        try:
            probe = await nats.connect(
                stack.target.url, allow_reconnect=False, connect_timeout=1, error_cb=quiet, **login
            )
        except Exception:  # noqa: BLE001 - Authorization Violation until the reload
            return False
        await probe.close()
        return True

    await until(accepted, timeout, "the publisher credential's NATS login", stack)
    return await nats.connect(stack.target.url, name="milestones-bench-publisher", **login)


async def _bearer_known(stack: Stack, role: str, token: str, timeout: float = 30) -> None:
    """The query service follows the credentials in the log: wait until it knows the token."""
    conn = Connection("127.0.0.1", stack.http_port, token=token)

    async def known() -> bool:
        try:
            return (await conn.get("/projects"))[0] == 200
        except (OSError, asyncio.IncompleteReadError):
            await conn.close()
            return False

    try:
        await until(known, timeout, f"the query service to know the {role}'s token", stack)
    finally:
        await conn.close()
