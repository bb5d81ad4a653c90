"""Rebuild the named projections together (one read of the stream) and print {"seconds",
"peak_rss_mb", "cpu_s"} as JSON: run as its own process by the benchmark so the peak RSS and the
CPU time (user + system, from ``getrusage``, the rebuild alone: not the start-up) are the
rebuild's alone."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import nats

from projections import PROJECTIONS
from projections.rebuild import rebuild
from services.app import logs, runtime
from services.app.settings import Settings


async def main(names: list[str]) -> None:
    settings = Settings.from_env()
    assert settings.database_url, "run by the benchmark, which sets MILESTONES_DATABASE_URL"
    runtime.tune()  # as ``milestones rebuild`` runs (services.cli.main)
    logs.configure("json", "warning")
    # the services' identity, from the environment the benchmark gave this process: reading
    # the log raw is the services' alone
    nc = await nats.connect(
        settings.nats_url, user=settings.nats_user, password=settings.nats_password
    )
    runtime.started()
    try:
        cpu0 = _cpu_seconds()
        started = time.perf_counter()
        with runtime.replaying():  # as ``milestones rebuild`` rebuilds (services.cli.ops)
            await rebuild(
                [PROJECTIONS[n] for n in names], settings.database_url, nc
            )  # one read for all
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu0
    finally:
        await nc.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"seconds": round(elapsed, 3), "peak_rss_mb": round(peak, 1), "cpu_s": round(cpu, 3)}
    sys.stdout.write(json.dumps(figures) + "\n")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
