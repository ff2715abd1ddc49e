"""ASGI guards in front of every route: the Host header (DNS rebinding), the size of request bodies, and NUL
characters (which PostgreSQL text cannot hold)."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: starlette comes with fastapi, the service does not import it
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
MAX_BODY_BYTES = 64 * 1024  # an edit is a few hundred bytes; JSON fields (ONVIF services) a few kB


def _loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> list[str]:
    """Listening on loopback: only the local names (a page on another site that rebinds its name to 127.0.0.1
    still sends its own name). Listening elsewhere: any, until VMS_ALLOWED_HOSTS names them."""
    return list(LOCAL_NAMES) if _loopback(bind_host) else ["*"]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` -> (lower-case name, IPv6 in brackets; port), None when malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in " /\\@?#"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address, as people write it in settings
        try:
            return f"[{ipaddress.IPv6Address(value).compressed}]", None
        except ValueError:
            return None
    else:
        name, _, port = value.partition(":")
        port = port if _ else None
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    if name.startswith("[") and name.endswith("]"):
        try:
            name = f"[{ipaddress.IPv6Address(name[1:-1]).compressed}]"
        except ValueError:
            return None
    return name, int(port) if port else None


class HostGuard:
    """Answer only requests whose Host header is one of ``allowed`` (else 400).

    Entries: ``name`` (any port), ``name:port``, ``*.domain`` (its subdomains), ``*`` (anything). Starlette's
    TrustedHostMiddleware does not fit: it cuts ``[::1]:8000`` at the first colon and ignores ports.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.any = False
        self.rules: list[tuple[str, int | None]] = []
        for entry in allowed:
            entry = entry.strip()
            if entry == "*":
                self.any = True
            elif entry.startswith("*."):
                self.rules.append((entry.lower(), None))
            elif (parsed := split_host(entry)) is not None:
                self.rules.append(parsed)
            else:
                raise ValueError(f"VMS_ALLOWED_HOSTS: {entry!r} is not a host name, name:port, *.domain or *")

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        parsed = split_host(header or "")
        if parsed is None:
            return False
        name, port = parsed
        for rule, rule_port in self.rules:
            if rule_port is not None and rule_port != port:
                continue
            if rule == name or (rule.startswith("*.") and name.endswith(rule[1:])):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        await _reply(send, 400, "this host name is not served here (set VMS_ALLOWED_HOSTS to add it)")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before any route parses them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _reply(send, 413, f"request body over {self.limit:,} bytes")
            return
        # Without a length (chunked), read up to the limit here, then hand the body on.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _reply(send, 413, f"request body over {self.limit:,} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        await self.app(scope, _replaying(body, receive), send)


# A NUL character in a JSON string: \u0000 after an even number of backslashes (\\u0000 is a backslash and "u0000").
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class NoNul:
    """Refuse a NUL character (U+0000) in the path, the query or a JSON body with 422, before any route: PostgreSQL
    text cannot hold one (a search or an edit with it failed in the database with a 500), and no camera field has
    one. Runs inside BodyLimit, so the body it reads is bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            await _reply(send, 422, "request: NUL characters (U+0000) are not allowed")
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if _JSON_NUL.search(body):
            await _reply(send, 422, "body: NUL characters (U+0000) are not allowed")
            return
        await self.app(scope, _replaying(body, receive), send)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, whole, then passes on what comes after (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: Sequence[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


class PrivateCache:
    """Answers of the API vary with the caller's key: ``Vary: X-API-Key`` and ``Cache-Control: private, no-cache``
    on every /api/ and /metrics response, so that no shared cache (a proxy between the command system and us) hands
    one client's answer to another, or to a client without a key; ``no-cache`` keeps ETag revalidation working."""

    _HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"vary", b"X-API-Key"), (b"cache-control", b"private, no-cache"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/api/") or path == "/metrics"):
            await self.app(scope, receive, send)
            return

        async def private(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in self._HEADERS if h[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, private)
