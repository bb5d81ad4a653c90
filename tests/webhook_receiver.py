"""A real local HTTP receiver for webhook tests (asyncio streams, HTTP/1.1 keep-alive).

It can be down (not listening), answer errors for its next N requests (with a ``Retry-After``
header when asked), redirect one path, and records every request it answered with its headers
and body. Signatures are checked as a receiver would, with the ``standardwebhooks`` library.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.app.embedded import free_port

CLOUDEVENTS_JSON = "application/cloudevents+json"


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[
            tuple[int, dict[str, str], bytes]
        ] = []  # (status answered, headers, body)
        self.fail_next = 0
        self.retry_after: str | None = None  # sent with those errors when set
        # requests to this path are answered 302 to ``redirect_to`` (webhooks never follow it)
        self.redirect_path: str | None = None
        self.redirect_to = "http://169.254.169.254/latest/meta-data/"
        self._server: asyncio.Server | None = None

    @property
    def delivered(self) -> list[tuple[dict[str, str], dict]]:
        """Accepted requests: headers and the notification (a CloudEvent's ``data``)."""
        return [(h, notification(h, b)) for status, h, b in self.requests if status == 200]

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if not line.strip():
                    continue
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, value = h.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, reason, extra = 200, "OK", ""
                if self.fail_next > 0:
                    self.fail_next -= 1
                    status, reason = 503, "Unavailable"
                    if self.retry_after is not None:
                        extra = f"retry-after: {self.retry_after}\r\n"
                elif line.split()[1:2] == [(self.redirect_path or "").encode()]:
                    status, reason = 302, "Found"
                    extra = f"location: {self.redirect_to}\r\n"
                self.requests.append((status, headers, body))
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\n{extra}content-length: 0\r\n\r\n".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def notification(headers: dict[str, str], body: bytes) -> dict:
    """The notification a webhook carries: the body (``milestones.v1``) or its ``data``."""
    decoded = json.loads(body)
    return decoded["data"] if headers.get("content-type") == CLOUDEVENTS_JSON else decoded


def receiver_key(secret: str) -> str | bytes:
    """What a receiver gives ``Webhook``, as the README says: a ``whsec_`` secret as it is,
    any other (older) secret as its UTF-8 bytes."""
    return secret if secret.startswith("whsec_") else secret.encode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: the Standard Webhooks library checks id, timestamp and signature."""
    try:
        Webhook(receiver_key(secret)).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def verify_legacy(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The old ``X-Milestones-Signature`` (legacy payload only): HMAC of the raw body."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-milestones-signature", ""))
