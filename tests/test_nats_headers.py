"""The header parse the services install into nats-py gives what nats-py's own gives (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from projections import nats_headers

# the pieces header blocks are made of, odd ones included: whitespace that str.isspace names
# but bytes.strip does not (\x1c-\x1f), a bare CR or LF, non-ASCII and invalid UTF-8
PIECES = st.sampled_from(
    [
        b"Nats-Sequence",
        b"Nats-Request-Info",
        b"a",
        b"-",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\x0b",
        b"\x1c",
        b"\x1f",
        b"\r",
        b"\n",
        b"\r\n",
        b"\xc3\xa9",
        b"\xff",
        b'{"acc":"$G"}',
        b"17",
    ]
)
BLOCKS = st.lists(PIECES, max_size=24).map(b"".join)


@given(BLOCKS)
def test_the_faster_parse_equals_nats_py_own(raw: bytes) -> None:
    assert nats_headers.ORIGINAL is not None, "nats-py no longer has the parse it replaces"
    assert nats_headers.parse_header_lines(raw) == nats_headers.ORIGINAL(raw)


def test_it_is_the_one_nats_py_clients_use_once_installed() -> None:
    assert nats_headers.install()
    block = b"Nats-Stream: MILESTONES_EVENTS\r\nNats-Sequence: 42\r\nBad Name: x\r\n\r\n"
    assert Client._parse_header_lines(block) == {
        "Nats-Stream": "MILESTONES_EVENTS",
        "Nats-Sequence": "42",
    }
    assert Client._parse_header_lines is nats_headers.parse_header_lines
