"""The floor of an ONVIF-stage sweep in Python on this machine: the same bytes on the wire, nothing else.

:func:`record_requests` captures the exact requests our sweep sends to each device (WS-UsernameToken signed, as
sent); :func:`floor_round` replays them with the least work an asyncio client can do: one connection per device,
each request written when the previous reply is complete (found by its Content-Length only: no header parsing
beyond that, no XML, no auth, no result objects), the connection closed with a RST, ``concurrency`` devices at a
time. The simulated devices keep no nonce history, so a replayed signed request is accepted while its Created time
is within the devices' tolerance (minutes). No check of ours can be cheaper than this on the same fleet.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from probes.onvif.http import HttpClient

_RESET = struct.pack("ii", 1, 0)


@contextmanager
def record_requests() -> Iterator[dict[tuple[str, int], list[bytes]]]:
    """Within the block, every request HttpClient sends is recorded per (host, port), in order."""
    seen: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    original = HttpClient.request

    async def recording(self: HttpClient, host: str, port: int, scheme: str, data: bytes, **kw: Any) -> Any:
        seen[(host, port)].append(data)
        return await original(self, host, port, scheme, data, **kw)

    HttpClient.request = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        HttpClient.request = original  # type: ignore[method-assign]


class _Exchange(asyncio.Protocol):
    def __init__(self, requests: Sequence[bytes], done: asyncio.Future[bool]) -> None:
        self.requests = requests
        self.done = done
        self.at = 0
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.requests[0])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        at = self.buf.find(b"Content-Length:", 0, head_end)
        if at < 0:
            at = self.buf.lower().find(b"content-length:", 0, head_end)
        length = int(self.buf[at + 15:self.buf.index(b"\r\n", at)])
        if len(self.buf) < head_end + 4 + length:
            return
        ok = self.buf.startswith(b"HTTP/1.1 200")
        self.buf = b""
        self.at += 1
        if not ok or self.at == len(self.requests):
            self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.transport.abort()
            if not self.done.done():
                self.done.set_result(ok)
            return
        self.transport.write(self.requests[self.at])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(False)


async def floor_round(requests: dict[tuple[str, int], list[bytes]], concurrency: int = 256) -> tuple[int, float]:
    """(devices whose every reply was 200, wall seconds) of one replay of ``requests``."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)

    async def one(host: str, port: int, sent: list[bytes]) -> bool:
        async with slots:
            done: asyncio.Future[bool] = loop.create_future()
            await loop.create_connection(lambda: _Exchange(sent, done), host, port)
            return await asyncio.wait_for(done, 10)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(h, p, sent) for (h, p), sent in requests.items()))
    return sum(results), time.perf_counter() - t0
