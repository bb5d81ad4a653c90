"""A faster parse of NATS message headers for nats-py, with the same result.

Every message the services read carries a header block: each event read by a runner, a rebuild
or the deadline scheduler (the stream's stored headers), each direct get of the intake's reads
(``Nats-Stream``, ``Nats-Sequence``, … and the stored ones) and each request that crossed an
account import (``Nats-Request-Info``). nats-py 2.16's ``Client._parse_header_lines`` checks
each header name for whitespace with a generator over its characters; py-spy put that parse at
8-10 % of the intake's CPU under the benchmark's reschedules and of a rebuild's. The optional
parser nats-py can use instead (``fast-mail-parser``, its ``fast_parse`` extra) is slower here
and returns lists of values.

``install()`` puts ``parse_header_lines`` in its place: the same split, decode and skipping
rules (``tests/test_nats_headers.py`` compares the two on generated blocks), the name's
whitespace found by one ``str.split``, which splits on exactly the characters ``str.isspace``
names. It is installed only where nats-py still has the function it replaces.
"""

from __future__ import annotations

from nats.aio.client import Client

__all__ = ["install", "parse_header_lines"]

_CRLF = b"\r\n"
ORIGINAL = getattr(Client, "_parse_header_lines", None)  # nats-py's own, kept as the oracle


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """``Name: Value`` lines (CRLF-separated) as a dict, as nats-py 2.16 parses them: split on
    the first ``:``, the name ASCII and stripped (a line without ``:``, a non-ASCII name or a
    name with whitespace inside is skipped), the value stripped and decoded as UTF-8 with
    replacement; a later line of the same name wins."""
    out: dict[str, str] = {}
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if key and key.split() != [key]:  # whitespace inside the name
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


def install() -> bool:
    """Use ``parse_header_lines`` for every nats-py client of the process (idempotent); False
    when this nats-py has no such function to replace (it then keeps its own)."""
    if ORIGINAL is None:
        return False
    Client._parse_header_lines = staticmethod(parse_header_lines)  # type: ignore[method-assign]
    return True
