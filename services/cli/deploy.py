"""`milestones nats-config --dir DIR`: the NATS side of a deployment (compose.yaml's ``init``).

Writes, once, into DIR (mode 0600 files, readable by the services' user):

- ``service-password``, ``system-password``: the services' and the system account's NATS
  passwords (give them to the services as ``MILESTONES_NATS_PASSWORD_FILE`` and
  ``MILESTONES_NATS_SYSTEM_PASSWORD_FILE``);
- ``secret.key``: the key that encrypts webhook secrets (``MILESTONES_SECRET_KEY_FILE``);
- ``accounts.conf``: the accounts the NATS servers include (bcrypt hashes only);
- ``credentials.conf``: the credential accounts, which the intake rewrites as credentials change
  (``MILESTONES_NATS_AUTH_FILE``).

Running it again keeps what exists, so a restart of the deployment keeps its identity.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from services.app.settings import Settings
from services.auth.credentials import bcrypt_hash, new_secret
from services.auth.identity import write_private
from services.auth.natsconf import (
    CREDENTIALS_FILE,
    credential_accounts,
    service_accounts,
    write_atomically,
)
from services.cli.ops import out
from services.ledger.keys import load_or_create
from services.notify.secretbox import ensure_key_file

SERVICE_USER = "milestones"
SYSTEM_USER = "system"


def add_deploy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("nats-config", help="write a deployment's NATS accounts and secrets once")
    p.add_argument("--dir", required=True, help="a directory shared with the NATS servers")
    p.add_argument("--owner", type=int, help="chown the files to this uid (the services' user)")


def _password(path: Path) -> str:
    if not path.exists():
        write_private(path, new_secret().encode())
    return path.read_text().strip()


def nats_config(args: argparse.Namespace, settings: Settings) -> int:
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    service = _password(base / "service-password")
    system = _password(base / "system-password")
    ensure_key_file(base / "secret.key")
    load_or_create(base / "log-signing.pem")  # signs the log's checkpoints (the intake)
    accounts = base / "accounts.conf"
    if not accounts.exists():  # bcrypt salts differ each time: write once, keep
        accounts.write_text(
            service_accounts(SERVICE_USER, bcrypt_hash(service), SYSTEM_USER, bcrypt_hash(system))
        )
    credentials = base / CREDENTIALS_FILE
    if not credentials.exists():
        write_atomically(credentials, credential_accounts([], settings.nats_account_slots))
    if args.owner is not None:
        for path in (base, *base.iterdir()):
            os.chown(path, args.owner, args.owner)
    out(f"NATS accounts and secrets in {base} (user {SERVICE_USER}, system user {SYSTEM_USER})")
    return 0
