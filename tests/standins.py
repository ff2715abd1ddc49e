"""Small stand-ins for a camera's text protocols (RTSP, HTTP) on real local sockets, for what real cameras do wrong:
each request head is read, parsed by the test's own ``parse`` and recorded, and answered with the bytes its handler
returns (None: say nothing, hang). Every server is closed when the test ends."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

R = TypeVar("R")


@dataclass
class StandIn(Generic[R]):
    host: str
    port: int
    scheme: str
    default_path: str
    requests: list[R] = field(default_factory=list)
    connections: int = 0

    def url(self, path: str | None = None, userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo}{self.host}:{self.port}{self.default_path if path is None else path}"


# None: say nothing (hang); a handler may answer at once or after awaiting something
Handler = Callable[[R], Awaitable[bytes | None] | bytes | None]


@asynccontextmanager
async def stand_ins(
    parse: Callable[[str, dict[str, str]], R], *, scheme: str, default_path: str
) -> AsyncIterator[Callable[..., Awaitable[StandIn[R]]]]:
    """``start(handler, host="127.0.0.1", port=0)``: a stand-in listening there; ``parse(request_line, headers)``
    (header names lower-cased) makes the request a handler sees and ``StandIn.requests`` records."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler[R], host: str = "127.0.0.1", port: int = 0) -> StandIn[R]:
        stand_in: StandIn[R] = StandIn(host, 0, scheme, default_path)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            stand_in.connections += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    first, *lines = head.decode().split("\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
                    request = parse(first, headers)
                    stand_in.requests.append(request)
                    raw = handler(request)
                    answer = await raw if inspect.isawaitable(raw) else cast("bytes | None", raw)
                    if answer is None:
                        await asyncio.sleep(30)
                        return
                    writer.write(answer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_client, host, port)
        servers.append(server)
        stand_in.port = server.sockets[0].getsockname()[1]
        return stand_in

    try:
        yield start
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await asyncio.wait_for(server.wait_closed(), 5)


# --- RTSP -------------------------------------------------------------------------------------------------------


@dataclass
class RtspRequest:
    method: str
    uri: str
    headers: dict[str, str]


def parse_rtsp(first: str, headers: dict[str, str]) -> RtspRequest:
    method, uri, _ = first.split(" ", 2)
    return RtspRequest(method, uri, headers)


def rtsp_stand_ins() -> AbstractAsyncContextManager[Callable[..., Awaitable[StandIn[RtspRequest]]]]:
    """stand_ins for RTSP: rtsp:// URLs, /live by default, each request an RtspRequest."""
    return stand_ins(parse_rtsp, scheme="rtsp", default_path="/live")


def rtsp_reply(cseq: str, status: str = "200 OK", headers: tuple[str, ...] = (), body: str = "") -> bytes:
    """An RTSP reply: the status line, CSeq, ``headers``, and ``body`` as an SDP with its length."""
    lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", *headers]
    if body:
        lines += ["Content-Type: application/sdp", f"Content-Length: {len(body.encode())}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
