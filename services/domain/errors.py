from __future__ import annotations


class Rejected(Exception):
    """A business rule refused a message. ``code`` is a stable word of the public contract."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
