"""Sending webhooks: claim due deliveries (``FOR UPDATE SKIP LOCKED`` and a lease, so several
notifiers share the work), POST the stored body signed as Standard Webhooks define
(``services.notify.signing``), record every attempt, and retry with exponential backoff
(honouring ``Retry-After``, in seconds or as an HTTP date) until the attempts run out.

Every delivery is signed: with the subscription's secret, or else with the notifier's key
(``MILESTONES_WEBHOOK_SECRET``, which the operator gives those receivers). With neither, the
delivery fails at once saying so (an unsigned webhook cannot be told from a forged one); it can
be sent again once the key is set. The outbox holds the subscription's secret sealed
(``services.notify.secretbox``); it is opened here, just before signing, and lives nowhere else
in clear. Connections go only where the target policy allows, to the address that was checked
(``services.notify.targets``). Some failures are final at once, because trying again cannot
help: a target the policy refuses, a redirect (never followed), a secret that does not open, no
key at all. They are marked failed with the reason; an admin can send them again
(``POST /deliveries/{id}/retry``) once the cause is fixed.

Each attempt is a span (``webhook.deliver``) linked to the trace of the event that caused the
delivery (the ``traceparent`` the outbox copied from the stored event)."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import time

import asyncpg
import httpx
import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter

from events import tracing
from services.notify import signing
from services.notify.outbox import JSON
from services.notify.secretbox import Keyring, SecretError, is_sealed, subscription_aad
from services.notify.targets import (
    PinnedTransport,
    Resolver,
    TargetPolicy,
    TargetRefused,
    system_resolver,
)

log = structlog.get_logger("milestones.notifier")
ATTEMPTS = Counter("milestones_webhook_attempts_total", "Webhook POSTs", ["outcome"])


def signing_key(
    stored: str | None, aad: bytes, keyring: Keyring | None, default: str | None
) -> str:
    """The key to sign with: the subscription's, opened now, or the notifier's default. A value
    that is not sealed was stored in clear before secrets were sealed (the log is append-only):
    used as it is. ``SecretError`` when a sealed value does not open."""
    if stored is None:
        if default is None:
            raise SecretError(
                "the subscription has no secret and this notifier has no key of its own: set "
                "MILESTONES_WEBHOOK_SECRET (whsec_ + base64 of 24-64 random bytes; give it to "
                "those receivers), then send the delivery again"
            )
        return default
    if not is_sealed(stored):
        return stored
    if keyring is None:
        raise SecretError(
            "the subscription's secret is sealed and this notifier has no key: "
            "set MILESTONES_SECRET_KEY (or MILESTONES_SECRET_KEY_FILE) as the intake has it"
        )
    return keyring.open(stored, aad)


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` (RFC 9110 §10.2.3): delay-seconds or an HTTP date; None when absent or
    unreadable. A date in the past means now (0)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))  # delay-seconds (a fraction too, as before)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read so too
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: base * 2^(attempt-1), jittered ±10 %, capped."""
    delay = min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return min(delay, cap)


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        wake: asyncio.Event,
        *,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        timeout: float,
        default_secret: str | None,
        poll: float,
        keyring: Keyring | None = None,
        targets: TargetPolicy | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.pool = pool
        self.wake = wake  # set when new deliveries were queued
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.default_secret = default_secret
        self.poll = poll
        self.keyring = keyring
        self.targets = targets or TargetPolicy()  # by default: public https endpoints only
        self.resolver = resolver

    _CLAIM = (
        "UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => $1) FROM ("
        "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now() "
        "ORDER BY next_attempt_at LIMIT 32 FOR UPDATE SKIP LOCKED) c WHERE d.id = c.id "
        "RETURNING d.id, d.kind, d.project_id, d.stakeholder, d.url, d.secret, d.body, "
        "d.attempts, d.content_type, d.traceparent"
    )

    async def run(self, stop: asyncio.Event) -> None:
        if self.default_secret is None:
            log.warning(
                "MILESTONES_WEBHOOK_SECRET is not set: webhooks of subscriptions without a "
                "secret of their own cannot be signed and fail until it is"
            )
        elif (why := signing.check_secret(self.default_secret)) is not None:
            log.warning(f"MILESTONES_WEBHOOK_SECRET: {why}; used as text until it is fixed")
        limits = httpx.Limits(max_connections=32)
        transport = PinnedTransport(self.targets, self.resolver, limits=limits)
        async with httpx.AsyncClient(
            transport=transport, timeout=self.timeout, follow_redirects=False, trust_env=False
        ) as client:
            while not stop.is_set():
                try:
                    claimed = await self.pool.fetch(self._CLAIM, self.timeout + 30)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("cannot claim deliveries; retrying", error=repr(exc))
                    claimed = []
                if claimed:
                    await asyncio.gather(*(self._attempt(client, d) for d in claimed))
                    continue
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll)
                except TimeoutError:
                    pass

    def _headers(self, d: asyncpg.Record, attempt: int) -> dict[str, str]:
        """Standard Webhooks' three headers, and the ones receivers had before them. Raises
        ``SecretError`` when there is no key to sign with or it does not open."""
        body: bytes = d["body"]
        content_type = d["content_type"] or JSON
        aad = subscription_aad(d["project_id"], d["stakeholder"], d["url"])
        secret = signing_key(d["secret"], aad, self.keyring, self.default_secret)
        headers = {
            "content-type": content_type,
            "user-agent": "milestones-notifier",
            **signing.headers(secret, d["id"], int(time.time()), body),
            "idempotency-key": d["id"],
            "x-milestones-delivery": d["id"],
            "x-milestones-kind": d["kind"],
            "x-milestones-attempt": str(attempt),
        }
        if content_type == JSON:  # the legacy body keeps its old signature while receivers move
            headers["x-milestones-signature"] = signing.legacy_signature(secret, body)
        return headers

    async def _attempt(self, client: httpx.AsyncClient, d: asyncpg.Record) -> None:
        attempt = d["attempts"] + 1
        bound = log.bind(delivery=d["id"], kind=d["kind"], url=d["url"], attempt=attempt)
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        final = False  # trying again cannot help: failed now, with the reason
        retry_after: float | None = None
        attributes = {
            "milestones.delivery.id": d["id"],
            "milestones.delivery.kind": d["kind"],
            "milestones.delivery.attempt": attempt,
            "http.request.method": "POST",
            "server.address": httpx.URL(d["url"]).host,
        }
        with tracing.linked(
            "webhook.deliver",
            [(d["traceparent"], None)],
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ) as span:
            try:
                headers = self._headers(d, attempt)
                response = await client.post(d["url"], content=d["body"], headers=headers)
                code = response.status_code
                span.set_attribute("http.response.status_code", code)
                if 300 <= code < 400:
                    where = response.headers.get("location", "nowhere")[:200]
                    error = (
                        f"HTTP {code}: redirects are not followed (to {where}): "
                        "subscribe the final URL"
                    )
                    final = True
                elif not 200 <= code < 300:
                    error = f"HTTP {code}: {response.text[:200]}"
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
            except TargetRefused as exc:
                error, final = f"target refused: {exc.reason}", True
            except SecretError as exc:
                error, final = f"cannot sign: {exc}", True
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error[:200]))
        elapsed = (time.perf_counter() - started) * 1000
        if error is None:
            state, delay = "delivered", 0.0
        elif final or attempt >= self.max_attempts:
            state, delay = "failed", 0.0
        else:
            state, delay = (
                "pending",
                backoff(attempt, self.backoff_base, self.backoff_max, retry_after),
            )
        ATTEMPTS.labels(outcome=state).inc()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO delivery_attempts VALUES ($1, $2, now(), $3, $4, $5) "
                "ON CONFLICT DO NOTHING",
                d["id"],
                attempt,
                code,
                error,
                elapsed,
            )
            await conn.execute(
                "UPDATE deliveries SET status = $2, attempts = $3, "
                "next_attempt_at = now() + make_interval(secs => $4), "
                "last_status = $5, last_error = $6, "
                "delivered_at = CASE WHEN $2 = 'delivered' THEN now() END "
                "WHERE id = $1",
                d["id"],
                state,
                attempt,
                delay,
                code,
                error,
            )
        if state == "delivered":
            bound.info("webhook delivered", status=code, ms=round(elapsed, 1))
        elif state == "failed":
            bound.error("webhook failed for good", error=error, final=final)
        else:
            bound.warning(
                "webhook attempt failed; will retry", error=error, retry_in_s=round(delay, 2)
            )
