"""Tracing A/B: the intake with OpenTelemetry traces exported (OTLP/HTTP to a local receiver)
against the same build with tracing off (no ``OTEL_*`` variable).

Each run is a fresh nats-server (fsync always, secured as in production) and a fresh
``serve intake`` process, loaded by ``intake_commands`` as ``milestones bench`` does. Runs are
interleaved in pairs whose order alternates, so a drift of the shared machine falls on both
sides alike; besides commands/s it reports the intake's CPU per command, the steadier figure on
two busy cores. The "on" side pays for everything tracing does: a span per command, one per
commit round, the trace context stamped into stored events, the batch processor and the OTLP
export to a receiver that decodes nothing (a collector's own cost is not the intake's).

    uv run python -m bench.tracing_ab --pairs 4 --projects 40 --publishers 64
    uv run python -m bench.tracing_ab --otel OTEL_TRACES_SAMPLER=parentbased_traceidratio \
        --otel OTEL_TRACES_SAMPLER_ARG=0.1
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bench.auth_ab import intake_run, summary
from bench.stack import NatsTarget, Stack
from services.app import runtime
from services.app.embedded import EmbeddedNats, free_port
from services.auth.identity import ServiceIdentity

SIDES = ("off", "on")


@dataclass
class TracedStack(Stack):
    otel: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        plain = {k: v for k, v in super().env().items() if not k.startswith("OTEL_")}
        return plain | self.otel


class Sink:
    """An OTLP/HTTP endpoint that accepts every export and counts it."""

    def __init__(self) -> None:
        self.posts = self.bytes = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                size = int(self.headers.get("content-length", "0"))
                self.rfile.read(size)
                sink.posts, sink.bytes = sink.posts + 1, sink.bytes + size
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def one_run(
    traced: bool,
    identity: ServiceIdentity,
    work: Path,
    projects: list[str],
    publishers: int,
    warmup: list[str],
    sink: Sink,
    more: dict[str, str],
) -> dict:
    work.mkdir(parents=True)
    server = EmbeddedNats(work / "nats", identity=identity)
    await asyncio.to_thread(server.start)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"} if traced else {}
    otel |= more if traced else {}
    stack = TracedStack(NatsTarget.embedded(server), None, free_port(), work, otel=otel)
    posts = sink.posts
    figures = await intake_run(server, stack, projects, publishers, warmup)
    figures["exports"] = sink.posts - posts
    if traced and not figures["exports"]:
        raise RuntimeError("tracing on, but nothing was exported: the A/B would compare nothing")
    return figures


async def tracing_ab(
    pairs: int, projects: int, publishers: int, work: Path, more: dict[str, str]
) -> dict:
    identity = ServiceIdentity.generate()
    names = [f"tr{i}" for i in range(projects)]
    warmup = [f"warm{i}" for i in range(max(1, projects // 10))]
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    sequence: list[str] = []
    sink = Sink()
    try:
        for pair in range(1, pairs + 1):
            for side in SIDES if pair % 2 else SIDES[::-1]:
                sys.stderr.write(f"tracing A/B: pair {pair}/{pairs}, tracing {side}\n")
                runs[side].append(
                    await one_run(
                        side == "on",
                        identity,
                        work / f"tr-{pair}-{side}",
                        names,
                        publishers,
                        warmup,
                        sink,
                        more,
                    )
                )
                sequence.append(side)
    finally:
        sink.close()
    on, off = summary(runs["on"]), summary(runs["off"])
    return {
        "pairs": pairs,
        "otel": more,
        "projects": projects,
        "publishers": publishers,
        "order": sequence,
        "off": off,
        "on": on,
        "exports": [r["exports"] for r in runs["on"]],
        "rate_ratio": round(on["median"] / off["median"], 4),  # on / off, commands/s
        "cpu_ratio": round(
            on["intake_cpu_ms_per_command_median"] / off["intake_cpu_ms_per_command_median"], 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--projects", type=int, default=60)
    parser.add_argument("--publishers", type=int, default=64)
    parser.add_argument(
        "--otel", action="append", default=[], help="KEY=VALUE for the traced side, e.g. a sampler"
    )
    args = parser.parse_args()
    runtime.tune()  # the load, as ``milestones bench``'s (services.cli.main)
    more = dict(kv.split("=", 1) for kv in args.otel)
    work = Path(tempfile.mkdtemp(prefix="tracing-ab-"))
    try:
        result = asyncio.run(tracing_ab(args.pairs, args.projects, args.publishers, work, more))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
