"""Who the CLI is on NATS: a role's credential from ``<data-dir>/dev.json`` (what ``milestones
dev`` writes), or the services' own identity for operators' commands (rebuild, credentials).

Without flags the CLI finds ``dev.json`` in the data directory (``.milestones``, or
``MILESTONES_DATA_DIR``) and uses its NATS URL and the credential of the role a command needs;
``--nats-url`` / ``MILESTONES_NATS_URL`` point it elsewhere, and ``MILESTONES_NATS_USER`` /
``MILESTONES_NATS_PASSWORD`` give it an identity explicitly.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS

from events.errors import StartupError
from services.app.dev import DEV_FILE, DevFile
from services.app.settings import Settings
from services.auth.identity import ServiceIdentity
from services.auth.principal import Role

SERVICE_IDENTITY = Path("identity") / "service.json"


def dev_file(settings: Settings) -> DevFile | None:
    path = Path(settings.data_dir) / DEV_FILE
    if not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=DevFile)
    except msgspec.DecodeError as exc:
        raise StartupError(f"{path} is not a dev.json Milestones wrote: {exc}") from exc


def nats_url(settings: Settings) -> str:
    """The URL given (flag or environment), else the one `milestones dev` wrote, else default."""
    dev = dev_file(settings)
    if dev is not None and settings.nats_url == Settings().nats_url:
        return dev.nats_url
    return settings.nats_url


def role_login(settings: Settings, role: Role) -> tuple[str | None, str | None]:
    if settings.nats_user:  # an explicit identity wins (deployments, scripts)
        return settings.nats_user, settings.nats_password
    dev = dev_file(settings)
    entry = dev.credentials.get(role) if dev else None
    if entry is None or entry.nats is None:
        return None, None
    return entry.nats.user, entry.nats.password


def service_login(settings: Settings) -> tuple[str | None, str | None]:
    if settings.nats_user:
        return settings.nats_user, settings.nats_password
    path = Path(settings.data_dir) / SERVICE_IDENTITY
    if path.exists():
        identity = msgspec.json.decode(path.read_bytes(), type=ServiceIdentity)
        return identity.service.user, identity.service.password
    return None, None


async def connect_as(settings: Settings, role: Role, name: str = "milestones-cli") -> NATS:
    from services.app.wiring import connect_nats

    user, password = role_login(settings, role)
    url = nats_url(settings)
    if user is None:
        raise StartupError(
            f"no {role} credential: run `milestones dev` here (it writes {DEV_FILE}), or set "
            "MILESTONES_NATS_USER and MILESTONES_NATS_PASSWORD (README, Security)"
        )
    return await connect_nats(url, name, user, password, retry=False)


async def connect_service(settings: Settings, name: str = "milestones-cli") -> NATS:
    from services.app.wiring import connect_nats

    user, password = service_login(settings)
    if user is None:
        raise StartupError(
            "this command needs the services' identity: run it where `milestones dev` keeps its "
            f"data ({SERVICE_IDENTITY} in the data dir), or set MILESTONES_NATS_USER and "
            "MILESTONES_NATS_PASSWORD to the services' login"
        )
    return await connect_nats(nats_url(settings), name, user, password, retry=False)
