"""Sending webhooks: claim due deliveries (``FOR UPDATE SKIP LOCKED`` and a lease, so several
notifiers share the work), POST the stored body signed with HMAC-SHA256, record every attempt,
and retry with exponential backoff (honouring ``Retry-After``) until the attempts run out.

The outbox holds the subscription's secret sealed (``services.notify.secretbox``); it is opened
here, just before signing, and lives nowhere else in clear. Connections go only where the target
policy allows, to the address that was checked (``services.notify.targets``). Some failures are
final at once, because trying again cannot help: a target the policy refuses, a redirect (never
followed), a secret that does not open. They are marked failed with the reason; an admin can
send them again (``POST /deliveries/{id}/retry``) once the cause is fixed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time

import asyncpg
import httpx
import structlog
from prometheus_client import Counter

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


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signing_key(
    stored: str | None, aad: bytes, keyring: Keyring | None, default: str | None
) -> str | None:
    """The key to sign with: the subscription's, opened now, or the notifier's default. A value
    that is not sealed was stored in clear before secrets were sealed (the log is append-only):
    used as it is. ``SecretError`` when a sealed value does not open."""
    if stored is None:
        return default
    if not is_sealed(stored):
        return stored
    if keyring is None:
        raise SecretError(
            "the subscription's secret is sealed and this notifier has no key: "
            "set MILESTONES_SECRET_KEY (or MILESTONES_SECRET_KEY_FILE) as the intake has it"
        )
    return keyring.open(stored, aad)


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
        "d.attempts"
    )

    async def run(self, stop: asyncio.Event) -> None:
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

    async def _attempt(self, client: httpx.AsyncClient, d: asyncpg.Record) -> None:
        attempt = d["attempts"] + 1
        body: bytes = d["body"]
        headers = {
            "content-type": "application/json",
            "user-agent": "milestones-notifier",
            "idempotency-key": d["id"],
            "x-milestones-delivery": d["id"],
            "x-milestones-kind": d["kind"],
            "x-milestones-attempt": str(attempt),
        }
        bound = log.bind(delivery=d["id"], kind=d["kind"], url=d["url"], attempt=attempt)
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        final = False  # trying again cannot help: failed now, with the reason
        retry_after: float | None = None
        try:
            aad = subscription_aad(d["project_id"], d["stakeholder"], d["url"])
            secret = signing_key(d["secret"], aad, self.keyring, self.default_secret)
            if secret:
                headers["x-milestones-signature"] = sign(secret, body)
            response = await client.post(d["url"], content=body, headers=headers)
            code = response.status_code
            if 300 <= code < 400:
                where = response.headers.get("location", "nowhere")[:200]
                error = (
                    f"HTTP {code}: redirects are not followed (to {where}): subscribe the final URL"
                )
                final = True
            elif not 200 <= code < 300:
                error = f"HTTP {code}: {response.text[:200]}"
                try:
                    retry_after = float(response.headers.get("retry-after", ""))
                except ValueError:
                    retry_after = None
        except TargetRefused as exc:
            error, final = f"target refused: {exc.reason}", True
        except SecretError as exc:
            error, final = f"cannot sign: {exc}", True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
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
