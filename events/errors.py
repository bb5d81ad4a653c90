"""The contract's error codes, the one refusal type, and the one table of HTTP statuses.

Every edge maps a ``Rejected`` once: NATS replies carry the error JSON, HTTP adds the status.
"""

from __future__ import annotations

# Stable words of the public contract (README "The contract"), with the HTTP status of each.
HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unknown_type": 400,
    "unauthenticated": 401,  # no credential, or one that is unknown or revoked
    "forbidden": 403,  # a known credential, but not this role, source, project or subject
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rejected": 422,
    "internal": 500,
    "unavailable": 503,
}


def http_status(code: str) -> int:
    return HTTP_STATUS.get(code, 400)


class Rejected(Exception):
    """A message or a request was refused. ``code`` is a word of ``HTTP_STATUS``; ``message``
    says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StartupError(Exception):
    """A server, a stream or the database is not what the services need. The message is one
    clear line; the CLI prints it and exits with code 2."""
