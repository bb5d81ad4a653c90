"""`milestones credentials create | list | revoke`: issued and revoked as events in the log.

Run where the services' identity is at hand (beside `milestones dev`'s data, or in a service
container). The running intake rewrites the NATS server's accounts within a second; ``create``
waits until the new credential can log in, ``revoke`` until it no longer can.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import Awaitable, Callable

import msgspec

from events import ENCODER
from events.errors import Rejected
from services.app.settings import Settings
from services.auth.credentials import Credential, CredentialStore, Issued
from services.auth.principal import ROLES, Principal
from services.cli.client import connect_service, dev_file, nats_url
from services.cli.ops import out
from services.query.calendar import feed_url

# Who acted: the CLI holds the services' identity; the operator's login is what it says it is.
CLI = Principal(id="system:milestones-cli", role="admin", via="system")


def add_credentials_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("credentials", help="issue, list and revoke credentials (README, Security)")
    verbs = c.add_subparsers(dest="verb", required=True, help="what to do")
    create = verbs.add_parser("create", help="issue a credential and print its secret once")
    create.add_argument("--role", required=True, choices=ROLES, help="what it may do")
    create.add_argument(
        "--source", action="append", default=[], help="publisher: a CloudEvent source (repeat)"
    )
    create.add_argument(
        "--project", action="append", default=[], help="limit to a project (repeat)"
    )
    create.add_argument("--name", help="a label (default: the first source, or the role)")
    create.add_argument("--json", action="store_true", help="print it as a dev.json entry")
    listing = verbs.add_parser("list", help="every credential (never a secret)")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="as JSON")
    token = verbs.add_parser(
        "token", help="print the HTTP bearer token of a role from dev.json (for curl)"
    )
    token.add_argument(
        "role", choices=["publisher", "reader", "auditor", "admin"], help="whose token"
    )
    verbs.add_parser(
        "url", help="print the HTTP address `milestones dev` listens on, from dev.json (for curl)"
    )
    verbs.add_parser(
        "feed-url",
        help="print the demo project's calendar feed address from dev.json (`dev --demo`)",
    )
    revoke = verbs.add_parser("revoke", help="revoke a credential: refused within a second")
    revoke.add_argument("credential_id", help="its id (`milestones credentials list`)")
    revoke.add_argument("--reason", help="why, kept in the log")


def _row(c: Credential) -> dict:
    return {
        "id": c.id,
        "role": c.role,
        "name": c.name,
        "sources": list(c.sources),
        "projects": list(c.projects),
        "nats_account": c.nats_account,
        "issued_at": c.issued_at.isoformat(),
        "issued_by": c.issued_by,
        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        "revoked_by": c.revoked_by,
    }


async def _logs_in(url: str, issued: Issued) -> bool:
    import nats

    try:
        nc = await nats.connect(
            url,
            user=issued.credential.id,
            password=issued.secret,
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=0,
            error_cb=_ignore,
        )
    except Exception:
        return False
    await nc.close()
    return True


async def _ignore(exc: Exception) -> None:
    return None


async def _until(check: Callable[[], Awaitable[bool]], want: bool, seconds: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while await check() != want:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def credentials(args: argparse.Namespace, settings: Settings) -> int:
    if args.verb == "url":
        dev = dev_file(settings)
        if dev is None:
            sys.stderr.write("milestones: no dev.json: run `milestones dev` here\n")
            return 2
        out(dev.http_url)
        return 0
    if args.verb == "feed-url":
        dev = dev_file(settings)
        if dev is None or dev.feed_url is None:
            sys.stderr.write(
                "milestones: no feed in dev.json: run `milestones dev --demo` here, or issue one "
                "with `milestones credentials create --role feed --project P`\n"
            )
            return 2
        out(dev.feed_url)
        return 0
    if args.verb == "token":
        dev = dev_file(settings)
        entry = dev.credentials.get(args.role) if dev else None
        if entry is None:
            sys.stderr.write(f"milestones: no {args.role} credential: run `milestones dev` here\n")
            return 2
        out(entry.http_token)
        return 0
    nc = await connect_service(settings, "milestones-credentials")
    store = CredentialStore(nc, slots=settings.nats_account_slots)
    try:
        await store.start()
        return await _run(args, settings, store)
    except Rejected as exc:
        sys.stderr.write(f"milestones: {exc.code}: {exc.message}\n")
        return 1
    finally:
        await store.stop()
        await nc.close()


async def _run(args: argparse.Namespace, settings: Settings, store: CredentialStore) -> int:
    operator = f"{getpass.getuser()}@{socket.gethostname()}"
    by = Principal(id=f"{CLI.id}:{operator}", role="admin", via="system")
    if args.verb == "list":
        rows = [_row(c) for c in store.credentials(include_revoked=args.all)]
        if args.json:
            out(ENCODER.encode(rows).decode())
        else:
            for r in rows:
                revoked = f"  revoked {r['revoked_at']}" if r["revoked_at"] else ""
                scope = ",".join(r["sources"] + [f"project:{p}" for p in r["projects"]])
                out(f"{r['id']:<40} {r['role']:<9} {scope or '-'}{revoked}")
        return 0
    if args.verb == "revoke":
        await store.revoke(args.credential_id, by=by, reason=args.reason)
        out(f"revoked {args.credential_id}")
        return 0
    issued = await store.issue(
        args.role, name=args.name, sources=args.source, projects=args.project, by=by
    )
    if issued.credential.nats_account is not None:
        url = nats_url(settings)
        if not await _until(lambda: _logs_in(url, issued), True):
            sys.stderr.write(
                "milestones: issued, but NATS does not accept it yet: the running intake "
                "updates the server's accounts (is `milestones dev` or the intake running?)\n"
            )
    if args.json:
        out(msgspec.json.encode(issued.as_dev_entry()).decode())
    else:
        out(f"id:         {issued.credential.id}")
        out(f"role:       {issued.credential.role}")
        out(f"http token: {issued.http_token}")
        c = issued.credential
        if c.role == "feed":  # what a calendar subscribes to
            out(f"feed url:   {feed_url(http_url(settings), c.projects, issued.http_token)}")
        if issued.credential.nats_account is not None:
            out(f"nats user:  {issued.credential.id}")
            out(f"nats pass:  {issued.secret}")
        out("The secret is shown once; Milestones keeps only its hashes.")
    return 0


def http_url(settings: Settings) -> str:
    """Where the HTTP API answers: MILESTONES_API_URL, else dev.json's, else the default."""
    if settings.api_url:
        return settings.api_url.rstrip("/")
    dev = dev_file(settings)
    return dev.http_url if dev is not None else f"http://127.0.0.1:{Settings().http_port}"
