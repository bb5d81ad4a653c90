"""Keeping secrets out of what people see: rejection records, parked events, log lines.

One rule everywhere: the value of any key whose name says it is a secret (``secret``,
``password``, ``token``, ``authorization``, ``cookie``, ``api_key`` in any case, as part of a
longer name too) is replaced by ``[redacted]``, at any depth, in arrays too. JSON that does not
parse (a rejected message may be broken JSON) is redacted by pattern, so a secret in a message
that was refused for its syntax is not shown either.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

REDACTED = "[redacted]"
SENSITIVE = re.compile(r"secret|passw|token|authorization|cookie|api_?key", re.IGNORECASE)
_KEY = r'"(?:[^"\\]|\\.)*"'
# "key": "value" (a string, possibly cut off) or "key": value (a number, a literal)
_PAIR = re.compile(
    rf'(?P<key>{_KEY})(?P<sep>\s*:\s*)(?P<value>"(?:[^"\\]|\\.)*(?:"|$)|[^\s,{{}}\[\]"]+)',
    re.DOTALL,
)


def sensitive(key: object) -> bool:
    return isinstance(key, str) and SENSITIVE.search(key) is not None


def redact(value: Any) -> Any:
    """A copy of decoded JSON (or a log event's values) with every sensitive key's value
    replaced. Text is searched too: JSON sent as a string (``"data": "{\"secret\": ..."``)."""
    if isinstance(value, dict):
        return {k: REDACTED if sensitive(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_json_text(value)
    return value


def _key_name(quoted: str) -> str:
    try:
        return str(msgspec.json.decode(quoted))  # "secr\u0065t" is "secret"
    except msgspec.DecodeError:
        return quoted[1:-1]


def _redact_pairs(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if not sensitive(_key_name(m.group("key"))):
            return m.group(0)
        return f'{m.group("key")}{m.group("sep")}"{REDACTED}"'

    return _PAIR.sub(one, text)


def redact_json_text(text: str) -> str:
    """The text with secrets redacted; unchanged (byte for byte) when there are none."""
    if "\\" not in text and not SENSITIVE.search(text):
        return text  # the common case, cheaply: no sensitive name, not even an escaped one
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return _redact_pairs(text)
    shown = redact(decoded)
    return text if shown == decoded else msgspec.json.encode(shown).decode()


def redact_bytes(data: bytes) -> bytes:
    """Bytes that are not UTF-8 (kept as base64 in a rejection): redacted by pattern, read as
    Latin-1 so that every byte survives the round trip."""
    return _redact_pairs(data.decode("latin-1")).encode("latin-1")
