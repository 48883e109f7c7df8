"""A bare keep-alive HTTP/1.1 client, the callers' second client beside httpx; `RoundRobin`
spreads one set of callers over several dispatchers."""

from __future__ import annotations

import asyncio
import json as jsonlib
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    """What the callers look at in an answer: its status."""

    status_code: int


class RawClient:
    """A bare keep-alive HTTP/1.1 client (one connection per caller), to measure the dispatcher
    without httpx's own per-request cost; same requests as the httpx callers."""

    def __init__(self, base_url: str) -> None:
        host_port = base_url.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self._free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        """Send one request on a free pooled connection (or a new one); returns the status."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = head.encode() + b"\r\n" + body
        while True:
            # A pooled connection may have been closed by the server's keep-alive timeout.
            reused = bool(self._free)
            conn = (
                self._free.pop() if reused else await asyncio.open_connection(self.host, self.port)
            )
            reader, writer = conn
            writer.write(data)
            status_line = await reader.readline()
            if status_line or not reused:
                break
            writer.close()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self._free.append(conn)
        return int(status_line.split()[1])

    async def get(self, path: str) -> Answer:
        """GET `path`, like `httpx.AsyncClient.get`."""
        return Answer(await self.request("GET", path))

    async def post(self, path: str, json: Any) -> Answer:
        """POST `json` to `path`, like `httpx.AsyncClient.post`."""
        return Answer(await self.request("POST", path, jsonlib.dumps(json).encode()))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        for _, writer in self._free:
            writer.close()


class RoundRobin:
    """Several clients of the same kind (one per dispatcher) used in turn, call by call: the
    callers' load split evenly over active-active dispatchers. `name` is the inner client's."""

    def __init__(self, clients: list[Any]) -> None:
        if not clients:
            raise ValueError("RoundRobin needs at least one client")
        self.clients = clients
        self.name = type(clients[0]).__name__
        self._next = 0

    def _pick(self) -> Any:
        client = self.clients[self._next]
        self._next = (self._next + 1) % len(self.clients)
        return client

    async def get(self, path: str) -> Any:
        """GET `path` on the next dispatcher."""
        return await self._pick().get(path)

    async def post(self, path: str, json: Any) -> Any:
        """POST `json` to `path` on the next dispatcher."""
        return await self._pick().post(path, json=json)
