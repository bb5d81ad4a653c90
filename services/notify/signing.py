"""Webhook signatures as the Standard Webhooks specification defines them (standardwebhooks.com).

Every POST carries ``webhook-id`` (the delivery id: the same on every retry), ``webhook-timestamp``
(integer Unix seconds of this attempt) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``. The timestamp is signed, so a
receiver that checks it (the official libraries allow five minutes) refuses a replayed request.

**Secrets and their key bytes** (``key_of``):

- ``whsec_`` followed by base64 is the specification's form: the key is the decoded bytes. The
  service generates these (``generate_secret``: 32 random bytes) and refuses a publisher's
  ``whsec_`` value that does not decode to 24-64 bytes (``check_secret``), so a receiver's
  ``Webhook(secret)`` always verifies.
- Any other text (secrets made before Standard Webhooks: 16-256 arbitrary characters) is used as
  its UTF-8 bytes, as the old ``X-Milestones-Signature`` used it: the receiver verifies with
  ``Webhook(secret.encode())`` (the library takes bytes as the raw key) or, equivalently,
  ``Webhook("whsec_" + base64(secret.encode()))``.

``legacy_signature`` is the old header, still sent beside the standard ones on the legacy payload
(``milestones.v1``) during the transition (README, "Webhooks").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

PREFIX = "whsec_"
GENERATED_BYTES = 32  # the specification asks for 24-64; 32 is SHA-256's own size
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_BYTES)).decode()


def _whsec_key(secret: str) -> bytes | None:
    """The key of a ``whsec_`` secret, or None when what follows is not base64."""
    encoded = secret[len(PREFIX) :]
    if not _BASE64.match(encoded):
        return None
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def key_of(secret: str) -> bytes:
    """The HMAC key a secret stands for (module docstring)."""
    if secret.startswith(PREFIX) and (key := _whsec_key(secret)) is not None:
        return key
    return secret.encode()


def check_secret(secret: str) -> str | None:
    """Why a publisher's secret cannot be accepted, or None. Only ``whsec_`` values are checked
    here (their form is the specification's); other text keeps the old rule (16-256 characters)."""
    if not secret.startswith(PREFIX):
        return None
    key = _whsec_key(secret)
    if key is None or not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return (
            f"secret starts with {PREFIX} but what follows is not base64 of "
            f"{MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes"
        )
    return None


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key_of(secret), msg_id, timestamp, body),
    }


def legacy_signature(secret: str, body: bytes) -> str:
    """``X-Milestones-Signature`` as sent before Standard Webhooks: the body only, no timestamp."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
