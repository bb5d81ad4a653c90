"""Authentication A/B: the intake with authentication against the same build without it.

Each run is a fresh nats-server (fsync always) and a fresh intake process, with nothing else
running, and the same ``intake_commands`` workload. Secured: the accounts of production, the
load through a publisher credential (the server maps its subject to the credential's account
slot, the intake looks the slot up and checks source and project). Unsecured: a server without
accounts, services and publishers anonymous, so every message is the services' own principal.
Runs are interleaved in pairs whose order alternates (secured first in odd pairs), so a drift
of the machine (other load, thermal state, page cache) falls on both sides alike.

Besides commands/s, the intake's CPU per command (and the server's, where the subject mapping
and the permission checks happen): on two shared cores a throughput difference is easily
noise, a CPU cost per message much less so.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.scenarios import intake_commands
from bench.stack import NatsTarget, Stack, clients, cpu_seconds, ready
from services.app.embedded import EmbeddedNats, free_port
from services.auth.identity import ServiceIdentity

SIDES = ("secured", "unsecured")


def order(pair: int) -> tuple[str, str]:
    """The sides of the ``pair``-th pair (from 1) in the order they run."""
    return SIDES if pair % 2 else (SIDES[1], SIDES[0])


async def one_run(
    secured: bool,
    identity: ServiceIdentity,
    work: Path,
    projects: list[str],
    publishers: int,
    warmup: list[str],
) -> dict:
    """One side of a pair on servers of its own, removed afterwards."""
    work.mkdir(parents=True)
    server = EmbeddedNats(work / "nats", identity=identity if secured else None)
    await asyncio.to_thread(server.start)
    return await intake_run(
        server,
        Stack(NatsTarget.embedded(server), None, free_port(), work),
        projects,
        publishers,
        warmup,
    )


async def intake_run(
    server: EmbeddedNats, stack: Stack, projects: list[str], publishers: int, warmup: list[str]
) -> dict:
    """``serve intake`` on ``stack`` under ``intake_commands``, with the intake's and the
    server's CPU per command; stops both and removes the stack's directory."""
    try:
        services = await stack.target.services()
        try:
            intake = stack.start("intake", "serve", "intake", "--no-http")
            await ready(stack, services)
            load = await clients(stack, services)
            try:
                # the first requests pay for connections, caches and the interpreter's warm-up
                await intake_commands(load.publisher, warmup, publishers)
                assert server.proc is not None
                intake0, server0 = intake.cpu_seconds(), cpu_seconds(server.proc.pid)
                figures = await intake_commands(load.publisher, projects, publishers)
                intake1, server1 = intake.cpu_seconds(), cpu_seconds(server.proc.pid)
            finally:
                await load.close()
        finally:
            await services.close()
        stack.check_alive()
    finally:
        stack.stop()
        server.stop()
    shutil.rmtree(stack.work, ignore_errors=True)
    per_command = 1000 / max(1, figures["messages"])
    figures["intake_cpu_ms_per_command"] = round((intake1 - intake0) * per_command, 4)
    figures["server_cpu_ms_per_command"] = round((server1 - server0) * per_command, 4)
    return figures


def summary(runs: list[dict]) -> dict:
    """Per side: every run's figures in run order, the median and the spread (min, max)."""
    rates = [r["per_s"] for r in runs]
    intake_cpu = [r["intake_cpu_ms_per_command"] for r in runs]
    server_cpu = [r["server_cpu_ms_per_command"] for r in runs]
    refused: dict[str, int] = {}
    for r in runs:
        for code, n in r["refused"].items():
            refused[code] = refused.get(code, 0) + n
    median = statistics.median(rates)
    both = [round(i + s, 4) for i, s in zip(intake_cpu, server_cpu, strict=True)]
    return {
        "per_s": rates,
        "median": round(median),
        "min": min(rates),
        "max": max(rates),
        "spread_pct": round(100 * (max(rates) - min(rates)) / median, 1) if median else None,
        "p50_ms": [r["p50_ms"] for r in runs],
        "p99_ms": [r["p99_ms"] for r in runs],
        "intake_cpu_ms_per_command": intake_cpu,
        "intake_cpu_ms_per_command_median": round(statistics.median(intake_cpu), 4),
        "server_cpu_ms_per_command": server_cpu,
        "server_cpu_ms_per_command_median": round(statistics.median(server_cpu), 4),
        # the path's CPU per command, run by run: what authentication adds is spent in these two
        "path_cpu_ms_per_command": both,
        "path_cpu_ms_per_command_median": round(statistics.median(both), 4),
        "messages": runs[0]["messages"],
        "refused": refused,
    }


async def auth_ab(
    pairs: int,
    projects: int,
    publishers: int,
    work: Path,
    report: Callable[[str], None],
    identity: ServiceIdentity | None = None,
) -> dict:
    identity = identity or ServiceIdentity.generate()
    names = [f"ab{i}" for i in range(projects)]
    warmup = [f"warm{i}" for i in range(max(1, projects // 20))]
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    sequence: list[str] = []
    for pair in range(1, pairs + 1):
        for side in order(pair):
            report(f"auth A/B: pair {pair}/{pairs}, {side}, {projects} projects")
            runs[side].append(
                await one_run(
                    side == "secured",
                    identity,
                    work / f"ab-{pair}-{side}",
                    names,
                    publishers,
                    warmup,
                )
            )
            sequence.append(side)
    secured, unsecured = summary(runs["secured"]), summary(runs["unsecured"])
    ratio = secured["median"] / unsecured["median"] if unsecured["median"] else float("nan")
    cpu_ratio = (
        secured["intake_cpu_ms_per_command_median"] / unsecured["intake_cpu_ms_per_command_median"]
        if unsecured["intake_cpu_ms_per_command_median"]
        else float("nan")
    )
    path_ratio = (
        secured["path_cpu_ms_per_command_median"] / unsecured["path_cpu_ms_per_command_median"]
        if unsecured["path_cpu_ms_per_command_median"]
        else float("nan")
    )
    return {
        "pairs": pairs,
        "projects": projects,
        "publishers": publishers,
        "order": sequence,
        "secured": secured,
        "unsecured": unsecured,
        "ratio": round(ratio, 4),  # secured / unsecured, medians of commands/s
        "within_5_percent": ratio >= 0.95,
        "intake_cpu_ratio": round(cpu_ratio, 4),
        # secured / unsecured, medians of the intake's and nats-server's CPU per command: the
        # cost itself, where commands/s on two shared cores also carry the load's and the
        # machine's swings (runs of one side 37-51 % apart on 2026-12-07)
        "path_cpu_ratio": round(path_ratio, 4),
    }


def rows(ab: dict) -> list[tuple[str, str, str, str]]:
    """The A/B's lines of the results table."""
    out = []
    for side in SIDES:
        x = ab[side]
        out.append(
            (
                f"intake, commands, {side} (A/B, {ab['pairs']} runs)",
                f"median {x['median']:,} msg/s ({x['min']:,}–{x['max']:,}, "
                f"spread {x['spread_pct']} %)",
                f"CPU/command: intake {x['intake_cpu_ms_per_command_median']} ms, "
                f"nats-server {x['server_cpu_ms_per_command_median']} ms, "
                f"both {x['path_cpu_ms_per_command_median']} ms",
                (
                    f"secured/unsecured {ab['ratio']:.1%}, CPU {ab['path_cpu_ratio']:.1%}"
                    if side == "secured"
                    else ""
                ),
            )
        )
    return out
