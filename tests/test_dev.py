"""`milestones dev`'s lifecycle against real processes: dev.json, the data directory's lock, the
reaper that stops the servers of a dev killed hard, ready only once HTTP answers, a quiet stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.app.embedded import free_port, port_is_free
from services.app.reaper import Reaper
from tests.conftest import wait_for

MILESTONES = [sys.executable, "-m", "services.cli"]
ENV = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k} | {
    "MILESTONES_LOG_FORMAT": "json"
}


def alive(pid: int) -> bool:
    """Running; a zombie its new parent has not reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])


async def gone_within(pids: list[int], seconds: float) -> None:
    async def all_gone() -> bool:
        return not any(alive(p) for p in pids)

    await wait_for(all_gone, timeout=seconds, what=f"pids {pids} to be gone")


class Dev:
    """`milestones dev` in a session of its own (a signal to its group is the terminal's
    Ctrl-C), its stderr's JSON lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict] = []
        self.text: list[str] = []
        self.seen_at: dict[str, float] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, data_dir: Path, *args: str) -> Dev:
        proc = await asyncio.create_subprocess_exec(
            *MILESTONES,
            "dev",
            "--data-dir",
            str(data_dir),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
            start_new_session=True,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace")
            self.text.append(text)
            if text.startswith("{"):
                event = json.loads(text)
                self.events.append(event)
                self.seen_at.setdefault(event.get("event", ""), time.monotonic())

    def event(self, name: str) -> dict | None:
        return next((e for e in self.events if e.get("event") == name), None)

    async def wait_event(self, name: str, timeout: float = 60) -> dict:
        async def seen() -> bool:
            if self.proc.returncode is not None and self.event(name) is None:
                raise AssertionError(f"dev exited with {self.proc.returncode}: {self.stderr}")
            return self.event(name) is not None

        try:
            await wait_for(seen, timeout=timeout, what=f"dev to log {name!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it logged:\n{''.join(self.text[-30:])}") from None
        event = self.event(name)
        assert event is not None
        return event

    async def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await asyncio.wait_for(self._reader, 30)  # the reaper holds stderr until it ends
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.text)

    async def cleanup(self, data_dir: Path) -> None:
        """Whatever a failed test left: dev, its servers (by their pids), the reader."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        started = self.event("nats-server started")
        pids = [started["pid"]] if started else []
        if (data_dir / "pg" / "postmaster.pid").exists():
            pids.append(postmaster_pid(data_dir))
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.cancel()


def get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:  # /ready says 503 while a runner catches up
        return exc.code


def ports() -> list[str]:
    return [
        "--nats-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--ops-port",
        str(free_port()),
    ]


async def test_ready_means_answering_dev_json_names_it_all_and_a_second_dev_is_refused(
    tmp_path: Path,
):
    dev = await Dev.start(tmp_path, *ports())
    try:
        ready = await dev.wait_event("milestones dev ready")
        # logged only once the listeners answer: a request now gets its answer at once
        assert await asyncio.to_thread(get, f"{ready['http']}/health", 1.0) == 200
        assert await asyncio.to_thread(get, ready["ready"], 1.0) in (200, 503)
        assert dev.seen_at["http listening"] <= dev.seen_at["milestones dev ready"]
        assert dev.seen_at["ops listening"] <= dev.seen_at["milestones dev ready"]

        path = tmp_path / "dev.json"
        assert path.stat().st_mode & 0o777 == 0o600
        written = json.loads(path.read_text())
        http = written["http_url"]
        assert written["nats_url"] == ready["nats"] and http == ready["http"]
        assert (
            written["dashboard_url"] == f"{http}/ui" and written["events_url"] == f"{http}/events"
        )
        assert written["ready_url"] == ready["ready"] and written["metrics_url"].endswith(
            "/metrics"
        )
        assert written["database_url"].startswith("postgresql://")
        assert written["pid"] == dev.proc.pid and written["data_dir"] == str(tmp_path)
        assert set(written["ports"]) == {"nats", "http", "ops"}
        assert set(written["credentials"]) == {"publisher", "reader", "auditor", "admin"}
        # the demo gate's approvers: reader credentials named dana and lee
        assert set(written["approvers"]) == {"dana", "lee"}
        assert {e["role"] for e in written["approvers"].values()} == {"reader"}
        for verb, said in (("url", http), ("token reader", written["credentials"]["reader"])):
            asked = await asyncio.create_subprocess_exec(
                *MILESTONES,
                "credentials",
                *verb.split(),
                "--data-dir",
                str(tmp_path),
                stdout=asyncio.subprocess.PIPE,
                env=ENV,
            )
            printed, _ = await asyncio.wait_for(asked.communicate(), 60)
            assert asked.returncode == 0
            if verb == "url":
                assert printed.decode().strip() == said
            else:
                assert printed.decode().strip() == said["http_token"]
        log_size = (tmp_path / "nats" / "nats-server.log").stat().st_size

        second = await asyncio.create_subprocess_exec(
            *MILESTONES,
            "dev",
            "--data-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2, err
        line = err.decode()
        assert line.count("\n") == 1 and not out, line
        assert f"pid {dev.proc.pid}" in line and f"started {written['started_at']}" in line
        # refused before touching a server: the first dev's nats-server saw nobody start
        assert (tmp_path / "nats" / "nats-server.log").stat().st_size == log_size
        assert json.loads(path.read_text())["pid"] == dev.proc.pid
        assert await asyncio.to_thread(get, f"{http}/health") == 200

        assert await dev.interrupt() == 0
        assert "stopped cleanly" in dev.stderr
        assert "Task exception was never retrieved" not in dev.stderr
        assert "Traceback" not in dev.stderr
        assert "ended without stopping its servers" not in dev.stderr  # the reaper: nothing to do
        assert not alive(dev.event("nats-server started")["pid"])  # type: ignore[index]
        assert not (tmp_path / "pg" / "postmaster.pid").exists()
    finally:
        await dev.cleanup(tmp_path)


async def test_a_killed_dev_takes_its_servers_along_and_the_next_gets_the_same_ports(
    tmp_path: Path,
):
    dev = await Dev.start(tmp_path, *ports())
    try:
        await dev.wait_event("milestones dev ready")
        before = json.loads((tmp_path / "dev.json").read_text())
        nats_pid = dev.event("nats-server started")["pid"]  # type: ignore[index]
        pg_pid = postmaster_pid(tmp_path)
        assert alive(nats_pid) and alive(pg_pid)

        dev.proc.kill()  # SIGKILL: no handler, no finally, no atexit
        await dev.proc.wait()
        await gone_within([nats_pid, pg_pid], 5.0)
        await asyncio.wait_for(dev._reader, 10)
        assert "servers of the ended milestones dev stopped" in dev.stderr
    finally:
        await dev.cleanup(tmp_path)

    again = await Dev.start(tmp_path)  # no port flags: the ports of the last dev, free again
    try:
        ready = await again.wait_event("milestones dev ready")
        after = json.loads((tmp_path / "dev.json").read_text())
        assert after["ports"] == before["ports"] and ready["http"] == before["http_url"]
        assert after["credentials"] == before["credentials"]  # kept across restarts
        assert after["approvers"] == before["approvers"]
        assert await asyncio.to_thread(get, f"{ready['http']}/health") == 200
        assert await again.interrupt() == 0
        assert "Traceback" not in again.stderr
    finally:
        await again.cleanup(tmp_path)


async def test_ctrl_c_during_the_first_start_stops_cleanly_and_leaves_nothing(tmp_path: Path):
    """SIGINT to the group while PostgreSQL is being initialised: initdb is not killed half-way,
    no start left unread ("Task exception was never retrieved"), no server left behind."""
    dev = await Dev.start(tmp_path, *ports())
    try:
        started = await dev.wait_event("nats-server started")
        assert await dev.interrupt() == 0
        assert "Task exception was never retrieved" not in dev.stderr
        assert "Traceback" not in dev.stderr and "Failed postgres command" not in dev.stderr
        assert not alive(started["pid"])
        if (tmp_path / "pg" / "postmaster.pid").exists():
            await gone_within([postmaster_pid(tmp_path)], 5.0)
    finally:
        await dev.cleanup(tmp_path)


@pytest.mark.parametrize("forgotten", [False, True])
async def test_the_reaper_stops_what_dev_did_not_forget(tmp_path: Path, forgotten: bool):
    server = subprocess.Popen(["sleep", "60"], start_new_session=True)
    lock_fd = os.open(tmp_path / "dev.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        reaper = Reaper.start(lock_fd)
        reaper.watch("nats", server.pid)
        if forgotten:
            reaper.forget("nats")
        reaper.close(wait=5.0)  # as if dev ended: the pipe's write end closes
        assert reaper.proc.returncode == 0
        assert (server.poll() is None) == forgotten
    finally:
        server.kill()
        server.wait()
        os.close(lock_fd)


def test_a_port_is_the_first_free_of_flag_earlier_default_and_passwords_are_masked():
    from services.app.dev import choose_port, masked

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, free = taken.getsockname()[1], free_port()
        assert choose_port("http", [None, busy, free]) == free
        other = choose_port("http", [busy])
        assert other not in (busy, 0)
        assert choose_port("ops", [free], avoid={free}) != free
    assert masked("postgresql://me:s3cret@db:5432/m") == "postgresql://me:****@db:5432/m"
    socket_url = "postgresql://postgres:@/postgres?host=/tmp/x/pg"
    assert masked(socket_url) == socket_url


def test_a_free_port_for_a_server_lies_outside_the_ephemeral_range_and_is_given_once():
    """An ephemeral port can go to an outgoing connection before the server binds it, and
    ``bind(0)`` repeats itself within a process (a cluster node failed on its client port in
    CI): the ports handed out lie below the kernel's ephemeral range, are free when handed out,
    and never repeat in one process."""
    from services.app.embedded import LISTEN_FLOOR, ephemeral_range

    known = ephemeral_range()
    if known is None or known[0] - 1 <= LISTEN_FLOOR:
        pytest.skip("no ephemeral range with room below it on this machine: bind(0) is used")
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(LISTEN_FLOOR <= port < known[0] for port in ports), ports
    for port in ports:  # free when handed out (as a server binds: TIME_WAIT does not hold it)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_a_free_port_on_an_ipv6_host_is_one_of_that_family():
    """``dev`` takes an IPv6 host (``--host ::1``): its ports are looked for in that family."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port("::1")
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", port))
        assert not port_is_free(port, "::1")
