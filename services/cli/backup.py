"""``milestones backup --out DIR`` and ``milestones restore DIR``: the log's streams through
JetStream's own snapshot and restore API, with the services' identity (like ``rebuild``).

What is kept: every stream whose loss would lose facts — MILESTONES (the events, receipts and
credentials), MILESTONES_CHECKPOINTS (the signed checkpoints ``audit verify`` checks),
MILESTONES_INBOX (messages not yet taken in, with the intake's consumer and the deadline
schedules) and MILESTONES_REJECTIONS (what was refused, and why). Read models are not: they
rebuild from the log (``milestones rebuild all``).

A snapshot is the server's own archive of a stream (its blocks and consumers, checksummed):
restored, the stream is byte for byte what it was, positions included, so the Merkle tree and
its signed checkpoints still verify. nats-py has no API for either direction, so the small
piece is here: the server streams a snapshot as chunks to a deliver subject, and each chunk
that carries a reply subject must be acknowledged there (flow control: the server keeps a
window of chunks in flight and stops when acks stop); an empty message ends it, carrying a
status when the snapshot failed. A restore is the mirror image: the server names a subject, we
send the chunks there as requests (each answered empty, or with an error), then an empty one,
answered with the restored stream's info.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.errors import StartupError
from events.subjects import CHECKPOINTS_STREAM, EVENTS_STREAM, INBOX_STREAM, REJECTIONS_STREAM
from services.app.settings import Settings

# The checkpoints first: a checkpoint then never signs more of the log than the backup holds
# (each stream's snapshot is a point in time of its own; MILESTONES only grows after it).
BACKED_UP = (CHECKPOINTS_STREAM, EVENTS_STREAM, INBOX_STREAM, REJECTIONS_STREAM)
MANIFEST = "backup.json"
CHUNK = 128 * 1024
FORMAT = 1


class BackupError(Exception):
    """What went wrong, worded for the operator."""


def add_backup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "backup", help="snapshot the event log's streams into a directory (JetStream snapshots)"
    )
    b.add_argument("--out", required=True, help="a new or empty directory")
    b.add_argument("--timeout", type=float, default=30.0, help="seconds without progress")
    r = sub.add_parser("restore", help="bring a backup's streams back on an empty NATS server")
    r.add_argument("dir", help="a directory `milestones backup` wrote")
    r.add_argument(
        "--replicas",
        type=int,
        help="replicas of the restored streams (default MILESTONES_STREAM_REPLICAS)",
    )
    r.add_argument("--timeout", type=float, default=30.0, help="seconds without progress")


def out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _api_error(body: dict) -> str | None:
    error = body.get("error")
    if not error:
        return None
    return f"{error.get('description')} ({error.get('err_code')})"


JS_READY_S = 15.0  # how long a JetStream API call waits for JetStream to answer at all


async def _api(nc: NATS, subject: str, body: bytes, timeout: float) -> Msg:
    """A JetStream API request that waits for JetStream to be there: a server (or a cluster)
    just started answers "no responders" on $JS.API until its JetStream (meta leader) is up —
    nats-py does not retry that, so the small loop is here (bounded, then the error stands)."""
    deadline = time.monotonic() + JS_READY_S
    pause = 0.05
    while True:
        try:
            return await nc.request(subject, body, timeout=timeout)
        except nats.errors.NoRespondersError:
            if time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)


async def _stream_exists(nc: NATS, stream: str, timeout: float) -> bool:
    reply = await _api(nc, f"$JS.API.STREAM.INFO.{stream}", b"", timeout=timeout)
    body = json.loads(reply.data)
    error = body.get("error")
    if error and error.get("err_code") == 10059:  # stream not found
        return False
    if error:
        raise BackupError(f"stream {stream}: {_api_error(body)}")
    return True


async def snapshot(nc: NATS, stream: str, path: Path, timeout: float) -> dict:
    """Write ``stream``'s snapshot to ``path``; returns the server's answer (config, state)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    tmp = path.with_name(path.name + ".part")
    try:
        request = {"deliver_subject": inbox, "chunk_size": CHUNK, "jsck": True}
        reply = await _api(
            nc, f"$JS.API.STREAM.SNAPSHOT.{stream}", json.dumps(request).encode(), timeout
        )
        answer = json.loads(reply.data)
        if error := _api_error(answer):
            raise BackupError(f"stream {stream}: the server refused a snapshot: {error}")
        digest = hashlib.sha256()
        size = 0
        with tmp.open("wb") as f:
            while True:
                try:
                    msg = await sub.next_msg(timeout=timeout)
                except Exception as exc:  # nats-py's TimeoutError is its own class
                    raise BackupError(
                        f"stream {stream}: no snapshot data for {timeout:.0f} s ({exc!r})"
                    ) from exc
                if not msg.data:  # the end: a status says whether the snapshot failed
                    status = (msg.headers or {}).get("Status")
                    if status and status != "204":
                        description = (msg.headers or {}).get("Description", "")
                        raise BackupError(
                            f"stream {stream}: snapshot failed: {status} {description}".strip()
                        )
                    break
                f.write(msg.data)
                digest.update(msg.data)
                size += len(msg.data)
                if msg.reply:  # flow control: the server sends more as chunks are acked
                    await nc.publish(msg.reply, b"")
            f.flush()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        await sub.unsubscribe()
    return {
        "name": stream,
        "file": path.name,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "config": answer.get("config"),
        "state": answer.get("state"),
    }


async def restore_stream(
    nc: NATS, entry: dict, path: Path, replicas: int | None, timeout: float
) -> dict:
    """Send one stream's snapshot to the server; returns the restored stream's info."""
    stream = entry["name"]
    config = dict(entry["config"])
    if replicas:
        config["num_replicas"] = replicas
    request = {"config": config, "state": entry.get("state") or {}}
    reply = await _api(
        nc, f"$JS.API.STREAM.RESTORE.{stream}", json.dumps(request).encode(), timeout
    )
    answer = json.loads(reply.data)
    if error := _api_error(answer):
        raise BackupError(f"stream {stream}: the server refused the restore: {error}")
    deliver = answer["deliver_subject"]
    # In a cluster the meta leader answers the restore and subscribes to ``deliver`` on its own
    # server; the server this client is on learns that interest over the route a moment later,
    # so the first chunk can meet "no responders" (seen in CI). Nothing was delivered then, so
    # _api's bounded retry is safe here too.
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            ack = await _api(nc, deliver, chunk, timeout)
            if ack.data and (error := _api_error(json.loads(ack.data))):
                raise BackupError(f"stream {stream}: restore failed: {error}")
    done = await _api(nc, deliver, b"", max(timeout, 60.0))
    info = json.loads(done.data)
    if error := _api_error(info):
        raise BackupError(f"stream {stream}: restore failed: {error}")
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def backup(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.client import connect_service

    target = Path(args.out)
    if (target / MANIFEST).exists():
        raise StartupError(f"{target} already holds a backup: choose a new directory")
    target.mkdir(parents=True, exist_ok=True)
    nc = await connect_service(settings, "milestones-backup")
    streams = []
    try:
        for stream in BACKED_UP:
            if not await _stream_exists(nc, stream, args.timeout):
                if stream == EVENTS_STREAM:
                    raise StartupError(f"no stream {stream} on this server: nothing to back up")
                continue  # a stream no service has created yet holds nothing
            entry = await snapshot(nc, stream, target / f"{stream}.snapshot", args.timeout)
            streams.append(entry)
            state = entry["state"] or {}
            out(
                f"{stream}: {state.get('messages', 0)} message(s), last sequence "
                f"{state.get('last_seq', 0)}, {entry['bytes']} bytes"
            )
        version = nc.connected_server_version
    except BackupError as exc:
        raise StartupError(str(exc)) from exc
    finally:
        await nc.close()
    manifest = {
        "format": FORMAT,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "server_version": f"{version.major}.{version.minor}.{version.patch}",
        "streams": streams,
    }
    # written last: a directory without it is an unfinished backup, which restore refuses
    part = target / f".{MANIFEST}.part"
    part.write_text(json.dumps(manifest, indent=2) + "\n")
    part.replace(target / MANIFEST)
    out(f"backup written to {target}")
    return 0


async def restore(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.client import connect_service

    source = Path(args.dir)
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise StartupError(f"{source} holds no finished backup ({MANIFEST}: {exc})") from exc
    if manifest.get("format") != FORMAT:
        raise StartupError(f"{source}: backup format {manifest.get('format')} is not {FORMAT}")
    for entry in manifest["streams"]:  # check every file before touching the server
        path = source / entry["file"]
        if not path.exists() or _sha256(path) != entry["sha256"]:
            raise StartupError(f"{path} is missing or damaged (its checksum does not match)")
    replicas = args.replicas or settings.stream_replicas
    nc = await connect_service(settings, "milestones-restore")
    try:
        present = [
            e["name"]
            for e in manifest["streams"]
            if await _stream_exists(nc, e["name"], args.timeout)
        ]
        if present:
            raise StartupError(
                f"stream(s) {', '.join(present)} already exist on this server: restore brings "
                "a backup back on an empty server, before the services start (to replace a "
                "log, delete its streams first: nats stream rm)"
            )
        for entry in manifest["streams"]:
            info = await restore_stream(nc, entry, source / entry["file"], replicas, args.timeout)
            state = info.get("state") or {}
            out(
                f"{entry['name']}: restored, {state.get('messages', 0)} message(s), "
                f"last sequence {state.get('last_seq', 0)}"
            )
    except BackupError as exc:
        raise StartupError(str(exc)) from exc
    finally:
        await nc.close()
    out(f"restored from {source}: start the services, then `milestones rebuild all`")
    return 0
