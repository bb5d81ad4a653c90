"""Settings: the only place that reads the environment (``Settings.from_env``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # -- operations (README "Operations") --
    ops_host: str = "127.0.0.1"  # /health, /ready, /metrics of every process (0.0.0.0: scrapers)
    ops_port: int = 9464  # 0: none apart from the HTTP API's own routes
    shutdown_timeout_s: int = 10  # SIGTERM/SIGINT: the process is gone within this, whatever hangs
    ready_stall_s: int = 30  # /ready: a runner with work and no progress this long is not ready
    max_message_bytes: int = 64 * 1024
    max_batch_events: int = 100
    stream_replicas: int = 1
    append_attempts: int = 6
    command_workers: int = 512
    inbox_batch: int = 1000  # the committer's largest round (an atomic batch's limit)
    projection_batch: int = 2000
    scheduler: bool = True  # deadlines as JetStream message schedules (runs with the intake)
    at_risk_gap: int = 25  # health: at risk when progress is this many points behind elapsed time
    # characters of status rows' JSON the query service keeps judged (services.query.judged_memo,
    # its MEMO_TEXT_BUDGET); 0 keeps nothing
    query_memo_chars: int = 4_000_000
    notify_max_attempts: int = 12  # webhook attempts before a delivery is marked failed
    notify_backoff_ms: int = 1000  # first retry after ~this; doubles per attempt (jittered)
    notify_backoff_max_s: int = 3600  # the longest wait between two attempts
    notify_timeout_s: int = 10  # per webhook POST
    notify_sweep_s: int = 300  # re-judge health of subscribed projects this often (the clock moves)
    digest_every_s: int = (
        7 * 24 * 3600
    )  # project digest to subscribers this often; 0 = only on demand
    webhook_secret: str | None = (
        None  # signs webhooks of subscriptions that have no secret of their own
    )
    # -- identity (README "Security") --
    nats_user: str | None = None  # the services' own NATS identity
    nats_password: str | None = None
    nats_system_user: str | None = None  # NATS system account: reloads the server's accounts
    nats_system_password: str | None = None
    nats_auth_file: str | None = None  # the accounts file the server includes (rewritten live)
    nats_account_slots: int = 1000  # NATS accounts for credentials (more: restart nats-server)
    secret_key: str | None = None  # webhook secrets' cipher key(s): "kid:base64url[,kid:...]"
    secret_key_file: str | None = None  # or a file holding the same
    signing_key_file: str | None = None  # Ed25519 key of the log's signed checkpoints
    webhook_allow_hosts: str = ""  # comma-separated hosts that may be http:// or private
    jwt_jwks_url: str | None = None  # an identity provider's JWKS: bearer JWTs are accepted
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_role_claim: str = "milestones_role"  # the claim naming the role
    # -- tracing (README "Tracing"): from the standard OTEL_* variables only (``traces_from``)
    traces: str = "none"  # none | otlp | console | otlp,console
    # -- the CLI's HTTP commands (approve, reject) --
    token: str | None = None  # a bearer token (MILESTONES_TOKEN): who signs
    api_url: str | None = None  # the HTTP API (default: the one `milestones dev` wrote)
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    data_dir: str = ".milestones"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, field_type in cls.__annotations__.items():
            if name in _FROM_OTEL:
                continue
            raw = env.get(f"MILESTONES_{name.upper()}")
            path = env.get(f"MILESTONES_{name.upper()}_FILE")
            if raw is None and path is not None and f"{name}_file" not in cls.__annotations__:
                # the container-secrets convention: the value is in a file (compose secrets)
                try:
                    raw = Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(
                        f"MILESTONES_{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
                    ) from None
            if raw is None:
                continue
            if field_type == "int":
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(
                        f"MILESTONES_{name.upper()} must be a whole number, got {raw!r}"
                    ) from None
                if name in _AT_LEAST and int(raw) < _AT_LEAST[name]:
                    raise ValueError(
                        f"MILESTONES_{name.upper()} must be {_AT_LEAST[name]} or more, got {raw!r}"
                    )
            elif field_type == "bool":
                if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(
                        f"MILESTONES_{name.upper()} must be true or false, got {raw!r}"
                    )
                values[name] = raw.lower() in ("1", "true", "yes", "on")
            else:
                values[name] = raw
        values["traces"] = traces_from(env)
        if "database_url" not in values and env.get("DATABASE_URL"):
            values["database_url"] = env["DATABASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return msgspec.convert(values, cls)


# the least value a setting takes (the environment's values are checked against it)
_AT_LEAST = {"query_memo_chars": 0}
_FROM_OTEL = {"traces"}  # set by the OpenTelemetry variables, never by a MILESTONES_ one
_EXPORTERS = {"otlp", "console"}


def traces_from(env: Mapping[str, str]) -> str:
    """Where traces go, as the OpenTelemetry SDK variables say, but off unless asked: the SDK's
    own default exporter is OTLP to localhost, which would make every process try to export.

    On when ``OTEL_TRACES_EXPORTER`` names ``otlp`` and/or ``console``, or when an OTLP
    endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``);
    off when ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. The rest of the
    ``OTEL_*`` variables (endpoint, headers, sampler, resource) are read by the SDK itself."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [n for n in named if n]
    if not named:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        named = ["otlp"] if endpoint else ["none"]
    if "none" in named:
        return "none"
    if unknown := sorted(set(named) - _EXPORTERS):
        raise ValueError(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}: this build exports traces with"
            " otlp (OTLP over HTTP) or console; use one of those, or none"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in named and protocol.strip() != "http/protobuf":
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this build sends OTLP over HTTP only; set"
            " it to http/protobuf and point the endpoint at the collector's HTTP port (4318)"
        )
    return ",".join(dict.fromkeys(named))
