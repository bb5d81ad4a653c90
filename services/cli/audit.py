"""``milestones audit export`` and ``milestones audit verify``: the tamper evidence of the log.

``export --out FILE`` writes every stored message in stream order (exact bytes), the signed
checkpoints and the public key; ``verify --file FILE`` checks such a file offline, ``verify``
alone checks the live log (both need nothing but the public key to trust the result; the live
form reads the streams, which only the services' identity may). Exit 0 when the log verifies,
1 with one line naming the first bad position when it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from contextlib import aclosing
from pathlib import Path

from events import ENCODER
from events.errors import StartupError
from services.app.settings import Settings
from services.ledger.export import ExportError, export_lines, open_export
from services.ledger.keys import PublicKey, key_path, load_public
from services.ledger.note import ORIGIN, utc_time
from services.ledger.verify import Report, verify
from services.ledger.view import LedgerView


def signing_key_path(settings: Settings) -> Path:
    return key_path(settings.data_dir, settings.signing_key_file)


def add_audit_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``audit export`` and ``audit verify`` under the ``audit`` command (the audit-trail query,
    added before this, keeps working without an action)."""
    audit = sub.choices.get("audit") or sub.add_parser("audit", help="the audit trail")
    actions = audit.add_subparsers(
        dest="audit_action", metavar="{export,verify}", help="without one: the audit trail"
    )
    actions.required = False
    e = actions.add_parser(
        "export",
        help="write the log (stored bytes), its signed checkpoints and the public key to a file",
    )
    e.add_argument("--out", dest="audit_out", required=True, help="the JSON Lines file to write")
    v = actions.add_parser(
        "verify",
        help="recompute the Merkle tree and check every signed checkpoint "
        "(the live log, or an export with --file)",
    )
    v.add_argument("--file", dest="audit_file", help="an export to verify offline")
    v.add_argument(
        "--key",
        dest="audit_key",
        help="the log's public key (a file or the text: PEM, base64, or note vkey) as published "
        "at /.well-known/milestones/log-key; default: the export's own, or the key file",
    )
    v.add_argument("--json", dest="audit_json", action="store_true", help="the report as JSON")


def is_audit_action(args: argparse.Namespace) -> bool:
    return getattr(args, "audit_action", None) is not None


async def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    if args.audit_action == "export":
        return await export(args, settings)
    return await verify_command(args, settings)


def _key_given(value: str) -> PublicKey:
    path = Path(value)
    try:
        return PublicKey.parse(path.read_text() if path.is_file() else value)
    except ValueError as exc:
        raise StartupError(f"--key: not an Ed25519 public key ({exc})") from None


def _local_key(settings: Settings) -> PublicKey:
    path = signing_key_path(settings)
    try:
        return load_public(path)
    except FileNotFoundError as exc:
        raise StartupError(f"{exc}: pass --key (GET /.well-known/milestones/log-key)") from None


async def _connect(settings: Settings):
    """The services' identity (the streams are theirs), found as ``rebuild`` finds it; one
    line and exit 2 when NATS cannot be reached (``services.cli.client``)."""
    from services.cli.client import connect_service

    return await connect_service(settings, "milestones-audit")


async def export(args: argparse.Namespace, settings: Settings) -> int:
    key = _local_key(settings)
    nc = await _connect(settings)
    out = Path(args.audit_out)
    tmp = out.with_name(f".{out.name}.part")
    try:
        lines = export_lines(nc, key, ORIGIN, utc_time(dt.datetime.now(dt.UTC)))
        with tmp.open("wb") as f:
            async with aclosing(lines) as chunks:
                async for chunk in chunks:
                    f.write(chunk)
        tmp.replace(out)  # never a half-written export under the asked name
    finally:
        tmp.unlink(missing_ok=True)
        await nc.close()
    sys.stdout.write(f"wrote {out}\n")
    return 0


async def verify_command(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    note = ""
    if args.audit_file:
        try:
            exported = open_export(args.audit_file)
        except (OSError, ExportError) as exc:
            sys.stderr.write(f"milestones: {exc}\n")
            return 1
        if args.audit_key:
            key = _key_given(args.audit_key)
        else:
            key = PublicKey.parse(exported.header.public_key)
            note = (
                f" (key {key.key_id} taken from the export: compare it with "
                "/.well-known/milestones/log-key, or pass --key)"
            )
        report = await asyncio.to_thread(
            verify, exported.leaves(), exported.checkpoints, key, exported.header.origin
        )
    else:
        key = _key_given(args.audit_key) if args.audit_key else _local_key(settings)
        nc = await _connect(settings)
        try:
            report = await LedgerView(nc, key, ORIGIN).verify_live()
        finally:
            await nc.close()
    return show(report, args.audit_json, time.perf_counter() - started, note)


def show(report: Report, as_json: bool, seconds: float, note: str = "") -> int:
    if as_json:
        sys.stdout.write(ENCODER.encode(report).decode() + "\n")
    elif report.ok:
        sys.stdout.write(f"OK: {report.message} in {seconds:.1f}s{note}\n")
    else:
        sys.stderr.write(f"FAILED: {report.message}{note}\n")
    return 0 if report.ok else 1
