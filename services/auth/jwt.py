"""Bearer JWTs from an operator's identity provider, verified against its JWKS.

A token is accepted when its signature checks against a key the JWKS publishes (RS256, ES256 or
EdDSA only: never ``none`` nor an HMAC, which a public key would turn into a forgeable secret),
it names the configured issuer and audience, it has not expired, and its role claim names one of
the roles (README "Security"). The principal is ``jwt:<sub>``; ``milestones_sources`` and
``milestones_projects`` (lists of strings) narrow it the way a credential's sources and projects
do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import jwt
import structlog

from services.auth.principal import Principal

log = structlog.get_logger("milestones.auth")

ALGORITHMS = ("RS256", "ES256", "EdDSA")
JWT_ROLES = ("reader", "auditor", "admin", "publisher")  # a feed is a Milestones credential only
SOURCES_CLAIM = "milestones_sources"
PROJECTS_CLAIM = "milestones_projects"


class JwtVerifier:
    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        role_claim: str = "milestones_role",
        *,
        key_lifespan_s: float = 300,
        leeway_s: float = 30,
        timeout_s: float = 10,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.leeway_s = leeway_s
        self.key_lifespan_s = key_lifespan_s
        # PyJWKClient refetches the set on an unknown kid at most once per cooldown, so a flood
        # of tokens with made-up kids cannot make us hammer the identity provider.
        self._client = jwt.PyJWKClient(jwks_url, lifespan=key_lifespan_s, timeout=timeout_s)
        self._keys: dict[str, tuple[jwt.PyJWK, float]] = {}  # kid -> key, fetched at (monotonic)
        self._fetching = asyncio.Lock()

    async def verify(self, token: str) -> Principal | None:
        """The principal the token names, or None when anything about it does not check out."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not isinstance(kid, str):
            return None
        key = await self._key(kid)
        if key is None or key.algorithm_name != alg:  # the key decides the algorithm, not the token
            return None
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("jwt refused", reason=type(exc).__name__, kid=kid)
            return None
        return principal_of(claims, self.role_claim)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        cached = self._keys.get(kid)
        if cached is not None and time.monotonic() - cached[1] < self.key_lifespan_s:
            return cached[0]
        async with self._fetching:  # one fetch at a time; the others find its result
            again = self._keys.get(kid)
            if again is not None and again is not cached:
                return again[0]
            try:
                key = await asyncio.to_thread(self._client.get_signing_key, kid)
            except jwt.PyJWKClientConnectionError as exc:
                # the provider is unreachable: a key it published stays good until it answers
                # again (keys rotate over days; an outage must not sign everyone out)
                log.warning("jwks unreachable", error=str(exc), stale_key=cached is not None)
                if cached is None:
                    return None
                self._keys[kid] = (cached[0], time.monotonic())  # ask again a lifespan later
                return cached[0]
            except jwt.PyJWTError as exc:
                log.info("jwt key unknown", kid=kid, error=str(exc))
                self._keys.pop(kid, None)  # no longer published: tokens signed by it are refused
                return None
            self._keys[kid] = (key, time.monotonic())
            return key


def principal_of(claims: Mapping[str, Any], role_claim: str) -> Principal | None:
    """The principal verified claims name, or None when the role or a list claim is not valid."""
    sub, role = claims.get("sub"), claims.get(role_claim)
    if not isinstance(sub, str) or not sub or role not in JWT_ROLES:
        return None
    sources, projects = claims.get(SOURCES_CLAIM, []), claims.get(PROJECTS_CLAIM, [])
    if not _strings(sources) or not _strings(projects):
        return None
    return Principal(
        id=f"jwt:{sub}",
        role=role,
        sources=frozenset(sources),
        projects=frozenset(projects),
        via="jwt",
        name=sub,
    )


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def expires_at(token: str) -> float | None:
    """The ``exp`` of a token that has already been verified (a session lasts no longer)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) else None
