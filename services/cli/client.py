"""Who the CLI is on NATS, and where: a role's credential from ``<data-dir>/dev.json`` (what
``milestones dev`` writes), or the services' own identity for operators' commands (rebuild,
credentials).

Without flags the CLI finds ``dev.json`` in the data directory (``.milestones``, or
``MILESTONES_DATA_DIR``, or ``--data-dir``) and uses its NATS URL and the credential of the role a
command needs; ``--nats-url`` / ``MILESTONES_NATS_URL`` point it elsewhere, and
``MILESTONES_NATS_USER`` / ``MILESTONES_NATS_PASSWORD`` give it an identity explicitly.

A server that cannot be reached is a ``StartupError`` of one line that says where the URL came
from (``main`` prints it and exits 2): never nats-py's retries or a traceback.
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
CONNECT_TIMEOUT_S = 3.0


def dev_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / DEV_FILE


def dev_file(settings: Settings) -> DevFile | None:
    path = dev_path(settings)
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


def where_from(settings: Settings) -> str:
    """Where the URL came from, for an error line."""
    path = dev_path(settings)
    if settings.nats_url != Settings().nats_url:
        found = "found" if path.exists() else "no"
        return f"given by --nats-url or MILESTONES_NATS_URL; {found} {path}"
    if path.exists():
        return f"from {path}"
    return f"the default: no {path}"


def unreachable(settings: Settings, url: str, reason: str) -> StartupError:
    return StartupError(
        f"cannot reach NATS at {url} ({reason}): is `milestones dev` running? "
        f"({where_from(settings)})"
    )


def no_responders(settings: Settings, service: str, subject: str, start: str) -> StartupError:
    """No one subscribes where ``service`` should answer: the stack is not running there."""
    return StartupError(
        f"no {service} answers on {subject} at {nats_url(settings)}: start `milestones dev` "
        f"or `{start}` ({where_from(settings)})"
    )


def reason_of(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "Errno 111" in text or "refused" in text:
        return "connection refused"
    if isinstance(exc, TimeoutError) or "timeout" in text.lower() or "timed out" in text:
        return "timed out"
    return text or type(exc).__name__


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


async def connect(settings: Settings, name: str, user: str | None, password: str | None) -> NATS:
    """One attempt (two tries, no back-off), quiet: nats-py prints nothing, retries nothing
    (its ``max_reconnect_attempts=0`` means *forever* on a first connect)."""
    import nats

    from services.eventlog.streams import check_server_version

    url = nats_url(settings)
    errors: list[BaseException] = []

    async def remember(exc: Exception) -> None:
        errors.append(exc)

    try:
        nc = await nats.connect(
            url.split(","),
            name=name,
            user=user,
            password=password,
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=remember,
        )
    except Exception as exc:
        cause = errors[-1] if errors else exc
        if "Authorization Violation" in str(cause) or "Authorization" in type(cause).__name__:
            raise StartupError(
                f"NATS at {url} refused the credentials{f' of user {user}' if user else ''}: "
                f"check MILESTONES_NATS_USER / MILESTONES_NATS_PASSWORD, or run the command "
                f"where `milestones dev` keeps its data ({where_from(settings)})"
            ) from None
        raise unreachable(settings, url, reason_of(cause)) from None
    check_server_version(nc)
    return nc


async def connect_as(settings: Settings, role: Role, name: str = "milestones-cli") -> NATS:
    user, password = role_login(settings, role)
    if user is None:
        raise StartupError(
            f"no {role} credential: run `milestones dev` (it writes {dev_path(settings)}), pass "
            "--data-dir where it runs, or set MILESTONES_NATS_USER and MILESTONES_NATS_PASSWORD "
            "(README, Security)"
        )
    return await connect(settings, name, user, password)


async def connect_service(settings: Settings, name: str = "milestones-cli") -> NATS:
    user, password = service_login(settings)
    if user is None:
        raise StartupError(
            "this command needs the services' identity: run it where `milestones dev` keeps its "
            f"data ({SERVICE_IDENTITY} in the data dir, or --data-dir), or set "
            "MILESTONES_NATS_USER and MILESTONES_NATS_PASSWORD to the services' login"
        )
    return await connect(settings, name, user, password)
