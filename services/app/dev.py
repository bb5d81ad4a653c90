"""What `milestones dev` sets up on first start and finds again after: the services' identity,
one credential per role, the webhook-secret key, and ``<data-dir>/dev.json`` for the CLI."""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from services.app.settings import Settings
from services.auth.credentials import CredentialStore
from services.auth.identity import NatsLogin, ServiceIdentity, load_or_create, write_private
from services.auth.principal import Principal, Role
from services.notify.secretbox import ensure_key_file

log = structlog.get_logger("milestones.dev")

DEV_FILE = "dev.json"


class DevCredential(msgspec.Struct, frozen=True, kw_only=True):
    """One role's entry of ``dev.json``: the shape ``credentials create --json`` prints."""

    id: str
    role: str
    http_token: str
    nats: NatsLogin | None = None
    sources: list[str] = []
    projects: list[str] = []


class DevFile(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str
    http_url: str
    credentials: dict[str, DevCredential]


DEV_ROLES: tuple[Role, ...] = ("publisher", "reader", "auditor", "admin")
DEV_SOURCES = ["milestones-cli", "ci", "tracker", "planning"]  # what the README's examples use
DEV = Principal(id="system:milestones-dev", role="admin", via="system")
LOOPBACK = "127.0.0.1,localhost,::1"  # local webhook receivers are fine in development


def identity(data_dir: Path) -> ServiceIdentity:
    return load_or_create(data_dir / "identity" / "service.json")


def dev_settings(
    settings: Settings, data_dir: Path, ident: ServiceIdentity, **values: object
) -> Settings:
    """The settings of every service `dev` runs: its identity, keys and loopback webhooks."""
    keys = data_dir / "identity"
    if not settings.secret_key and not settings.secret_key_file:
        ensure_key_file(keys / "secret.key")  # 0600: encrypts webhook secrets in the log
    return msgspec.structs.replace(
        settings,
        nats_user=ident.service.user,
        nats_password=ident.service.password,
        nats_system_user=ident.system.user,
        nats_system_password=ident.system.password,
        nats_auth_file=str(data_dir / "nats" / "credentials.conf"),
        secret_key_file=settings.secret_key_file or str(keys / "secret.key"),
        signing_key_file=settings.signing_key_file or str(keys / "log-signing.pem"),
        webhook_allow_hosts=settings.webhook_allow_hosts or LOOPBACK,
        **values,
    )


async def ensure_dev_credentials(settings: Settings, data_dir: Path, http_url: str) -> Path:
    """Keep the credentials of an earlier ``dev.json`` that are still live; issue the rest."""
    from services.app.wiring import connect_services, prepare_streams

    path = data_dir / DEV_FILE
    earlier: dict[str, DevCredential] = {}
    if path.exists():
        try:
            earlier = msgspec.json.decode(path.read_bytes(), type=DevFile).credentials
        except msgspec.DecodeError:
            log.warning("dev.json unreadable: issuing new credentials", path=str(path))
    nc = await connect_services(settings, "milestones-dev")
    try:
        await prepare_streams(nc, settings)
        store = CredentialStore(nc, slots=settings.nats_account_slots)
        await store.start()
        entries = {}
        for role in DEV_ROLES:
            kept = earlier.get(role)
            if kept is not None and store.by_credential(kept.id) is not None:
                entries[role] = msgspec.to_builtins(kept)
                continue
            sources = DEV_SOURCES if role == "publisher" else []
            issued = await store.issue(role, name=f"dev {role}", sources=sources, by=DEV)
            entries[role] = issued.as_dev_entry()
            log.info("credential issued", role=role, credential=issued.credential.id)
        await store.stop()
    finally:
        await nc.close()
    document = {"nats_url": settings.nats_url, "http_url": http_url, "credentials": entries}
    write_private(path, msgspec.json.format(msgspec.json.encode(document)))
    return path
