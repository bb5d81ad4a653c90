"""compose.yaml cannot run here (no Docker engine); test what can be: it parses, its settings are
real settings, its NATS config starts a real nats-server, and each service command starts."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from services.app.embedded import free_port, nats_server_binary
from services.app.settings import Settings
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
                assert key.removeprefix("MILESTONES_").lower() in fields, (
                    f"{name}: {key} is not a setting"
                )


def test_nats_config_is_durable_and_starts_a_real_server(tmp_path: Path):
    conf = COMPOSE["configs"]["nats-conf"]["content"]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
    local = (
        conf.replace("/data", str(tmp_path / "js"))
        .replace("0.0.0.0:4222", f"127.0.0.1:{free_port()}")
        .replace("0.0.0.0:8222", f"127.0.0.1:{free_port()}")
        .replace("0.0.0.0:6222", f"127.0.0.1:{free_port()}")
    )
    (tmp_path / "nats.conf").write_text(local)
    check = subprocess.run(
        [nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr


async def test_each_service_command_starts(settings, nats_server, db_url):
    for name, service in COMPOSE["services"].items():
        if "build" not in service:  # nats and postgres are third-party images
            continue
        command = service["command"]
        env = {**os.environ, **{k: str(v) for k, v in (service.get("environment") or {}).items()}}
        env.update(
            MILESTONES_NATS_URL=nats_server.url,
            MILESTONES_STREAM_REPLICAS="1",
            MILESTONES_DATABASE_URL=db_url,
            MILESTONES_HTTP_HOST="127.0.0.1",
            MILESTONES_HTTP_PORT=str(free_port()),
            MILESTONES_LOG_FORMAT="json",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        lines: list[bytes] = []
        try:
            await wait_for(
                says_started(proc, lines), timeout=60, what=f"compose service {name} to start"
            )
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
