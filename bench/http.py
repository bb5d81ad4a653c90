"""A minimal HTTP/1.1 keep-alive GET client for the query benchmark.

Why not httpx: on two cores the client shares the CPU with the service it measures, and httpx
costs several times more per request than this; latency figures would mostly be the client's.
The query API always answers with Content-Length (JSON pages), which is all this client reads.
Every route but ``/health`` needs a credential: ``token`` is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio


class Connection:
    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """``token``: this request's bearer token, else the connection's."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        token = token or self.token
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{auth}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
