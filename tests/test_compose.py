"""compose.yaml cannot run here (no Docker engine); test what can be: it parses, its settings are
real settings, its NATS config starts a real nats-server, each service command starts, and each
healthcheck passes against the real service (``/ready`` on the one ops port)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
import yaml

from services.app.embedded import free_port, nats_server_binary
from services.app.settings import Settings
from services.cli.main import main
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_parses_and_names_the_whole_deployment():
    services = COMPOSE["services"]
    assert {
        "nats1",
        "nats2",
        "nats3",
        "postgres",
        "intake",
        "projections",
        "query",
        "notifier",
    } <= set(services)
    for name in ("nats1", "nats2", "nats3"):
        assert "--routes" in services[name]["command"]


def test_every_environment_variable_is_a_setting():
    fields = set(Settings.__annotations__)
    for name, service in COMPOSE["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith("MILESTONES_"):
                name = key.removeprefix("MILESTONES_").lower()
                assert name in fields or name.removesuffix("_file") in fields, (
                    f"{name}: {key} is not a setting"
                )


BUILT = [name for name, s in COMPOSE["services"].items() if "build" in s and name != "init"]


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(duration))
    assert match, f"a compose duration: {duration}"
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_every_service_has_a_ready_healthcheck_on_one_ops_port():
    services = COMPOSE["services"]
    ports = set()
    for name in BUILT:
        service, env = services[name], services[name]["environment"]
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        command = " ".join(check["test"])
        assert "/ready" in command and "MILESTONES_OPS_PORT" in command, command
        ports.add(env["MILESTONES_OPS_PORT"])
        assert env["MILESTONES_OPS_HOST"] == "0.0.0.0"  # scrapers on the compose network
        assert env["MILESTONES_OPS_PORT"] != env.get("MILESTONES_HTTP_PORT"), name
        # Docker's SIGKILL comes after stop_grace_period: later than the bounded shutdown
        assert _seconds(service["stop_grace_period"]) > int(env["MILESTONES_SHUTDOWN_TIMEOUT_S"])
    assert len(ports) == 1, f"one ops port for every service, not {ports}"
    conf = COMPOSE["configs"]["nats-conf"]["content"]
    assert re.search(r"^\s*http: 0\.0\.0\.0:8222\s*$", conf, re.M)
    for name in ("nats1", "nats2", "nats3", "postgres"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck"
    for name in ("nats1", "nats2", "nats3"):
        assert "http://127.0.0.1:8222/healthz" in " ".join(services[name]["healthcheck"]["test"])


def compose_nats(tmp_path: Path, cluster: bool) -> tuple[Path, str, dict[str, str]]:
    """compose.yaml's NATS configuration with its accounts, as `init` writes them, on free
    local ports; and the services' environment of compose.yaml pointed at it."""
    auth = tmp_path / "auth"
    assert main(["nats-config", "--dir", str(auth)]) == 0
    conf = COMPOSE["configs"]["nats-conf"]["content"]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
    assert re.search(r"^\s*include auth/accounts.conf\s*$", conf, re.M)
    port = free_port()
    local = (
        conf.replace("/data", str(tmp_path / "js"))
        .replace("0.0.0.0:4222", f"127.0.0.1:{port}")
        .replace("0.0.0.0:8222", f"127.0.0.1:{free_port()}")
        .replace("0.0.0.0:6222", f"127.0.0.1:{free_port()}")
    )
    if not cluster:  # one node of three has no JetStream quorum: run it alone
        local = re.sub(r"cluster \{.*?\n\}\n", "", local, flags=re.S)
    (tmp_path / "nats.conf").write_text(local)
    env = {k: str(v) for k, v in COMPOSE["services"]["intake"]["environment"].items()}
    env = {k: v.replace("/run/milestones", str(auth)) for k, v in env.items()}
    env.update(
        MILESTONES_NATS_URL=f"nats://127.0.0.1:{port}",
        MILESTONES_STREAM_REPLICAS="1",
        MILESTONES_SIGNING_KEY_FILE=str(auth / "log-signing.pem"),
    )
    return tmp_path / "nats.conf", f"nats://127.0.0.1:{port}", env


def test_nats_config_is_durable_and_valid_for_the_cluster(tmp_path: Path):
    conf, _, _ = compose_nats(tmp_path, cluster=True)
    check = subprocess.run(
        [nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr


async def test_compose_nats_enforces_the_accounts_and_each_service_starts(
    tmp_path: Path, db_url: str
):
    conf, url, env = compose_nats(tmp_path, cluster=False)
    server = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(lambda: _listening(url), timeout=15, what="the compose NATS server")
        monitor = re.search(r"http: (127.0.0.1:\d+)", conf.read_text())
        assert monitor is not None
        healthz = f"http://{monitor[1]}/healthz?js-enabled-only=true"  # the nodes' healthcheck
        assert (await asyncio.to_thread(urllib.request.urlopen, healthz, timeout=5)).status == 200
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
        for name, service in COMPOSE["services"].items():
            if "build" not in service or name == "init":
                continue
            service_env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
            service_env = {
                k: v.replace("/run/milestones", env["MILESTONES_SECRET_KEY_FILE"].rsplit("/", 1)[0])
                for k, v in service_env.items()
            }
            await started(
                name,
                service["command"],
                {
                    **service_env,
                    **{k: v for k, v in env.items() if k in _SHARED},
                    "MILESTONES_DATABASE_URL": db_url,
                    "MILESTONES_HTTP_PORT": str(free_port()),
                    "MILESTONES_HTTP_HOST": "127.0.0.1",
                    "MILESTONES_OPS_PORT": str(free_port()),
                    "MILESTONES_OPS_HOST": "127.0.0.1",
                },
                healthcheck=service["healthcheck"]["test"],
            )
    finally:
        server.terminate()
        server.wait(10)


_SHARED = (
    "MILESTONES_NATS_URL",
    "MILESTONES_STREAM_REPLICAS",
    "MILESTONES_SIGNING_KEY_FILE",
)


async def _listening(url: str) -> bool:
    host, port = url.removeprefix("nats://").split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    writer.close()
    return True


async def started(
    name: str, command: list[str], env: dict[str, str], healthcheck: list[str] | None = None
) -> None:
    """The service starts; then its compose healthcheck (run as Docker runs it, with the
    service's environment) passes, and SIGTERM stops it with a clean exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    lines: list[bytes] = []
    try:
        await wait_for(says_started(proc, lines), timeout=60, what=f"compose service {name}")
        if healthcheck is not None:
            assert healthcheck[:2] == ["CMD", "python"], healthcheck
            check = [sys.executable, *healthcheck[2:]]

            async def healthy() -> bool:
                run = await asyncio.create_subprocess_exec(
                    *check, env={**os.environ, **env}, stderr=asyncio.subprocess.DEVNULL
                )
                return await asyncio.wait_for(run.wait(), 10) == 0

            await wait_for(healthy, timeout=30, what=f"the healthcheck of {name}")
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, b"".join(lines).decode()


def says_started(
    proc: asyncio.subprocess.Process, lines: list[bytes]
) -> Callable[[], Awaitable[bool]]:
    """A ``wait_for`` predicate: reads the service's next line of output into ``lines``; true once
    the service says it is up."""

    async def listening() -> bool:
        lines.append(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert lines[-1] or proc.returncode is None, b"".join(lines).decode()
        return b"listening" in lines[-1] or b"services running" in lines[-1]

    return listening
