"""What the RTSP DESCRIBE check (probes.media.rtsp) and the frame sampler (probes.frames) share: one RTSP/1.0
connection over TCP (RFC 2326) with capped replies and one 401 answered, opened only where the address policy
allows, and OPTIONS + DESCRIBE with redirects (at most two) followed only where the policy allows too.

After SETUP with interleaved transport (RFC 2326 10.12) the server may send ``$``-framed RTP before a reply: a
connection in ``interleaved`` mode skips those frames while it waits for the reply; what follows the reply stays
in ``buf`` for the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from probes.errors import scrub
from probes.media._auth import Authorizer, clean_uri, connect_failed, login_refused, secrets_of, with_host
from probes.media.causes import MediaCause, MediaFailure
from probes.onvif.auth import Credential, parse_digest_challenges
from probes.policy import AddressPolicy, Refusal, check_async

__all__ = ["Connection", "Reply", "RtspProtocolError", "connection_failure", "open_described", "status_failure"]

USER_AGENT: Final = "vms-probe/0.1"
MAX_REDIRECTS: Final = 2
_MAX_HEADER_LINES: Final = 128
_MAX_STRAY_REPLIES: Final = 4  # replies with another CSeq skipped before giving up
_TOLERATED_OPTIONS: Final = frozenset({400, 403, 405, 451, 501, 551})  # OPTIONS badly done; DESCRIBE decides
_REDIRECTS: Final = frozenset({301, 302, 303, 305, 307, 308})
_RETRY_503_S: Final = 0.3


class RtspProtocolError(Exception):
    """The peer does not speak RTSP as we can read it (garbage, over the caps, closed mid-reply)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_bytes: int) -> None:
        self.reader = reader
        self.writer = writer
        self.max_bytes = max_bytes
        self.cseq = 0
        self.buf = b""
        self.auth: Authorizer | None = None
        self.accepted = False  # a request carrying our Authorization was not refused
        self.renewed = False
        self.interleaved = False  # after SETUP over TCP: "$" frames may come before a reply (skipped)

    def close(self) -> None:
        self.writer.transport.abort()

    async def request(self, method: str, uri: str, credential: Credential | None, headers: Sequence[str] = ()) -> Reply:
        """Send ``method``; answer a 401 once when we have a credential and have not yet answered one. A login
        already accepted on this connection is renewed once when the camera calls its nonce stale (RFC 7616
        3.3: the credential was right, the nonce expired); any other 401 stands."""
        reply = await self._exchange(method, uri, headers)
        if reply.status != 401 or credential is None:
            return reply
        challenges = reply.header_all("www-authenticate")
        if self.auth is not None:
            if not self.accepted or self.renewed or not any(c.stale for c in parse_digest_challenges(challenges)):
                return reply
            self.renewed = True
        self.auth = Authorizer.from_challenge(credential, challenges)
        if self.auth is None:
            return reply  # no scheme we answer: the 401 stands
        reply = await self._exchange(method, uri, headers)
        self.accepted = reply.status != 401
        return reply

    def send(self, method: str, uri: str, headers: Sequence[str] = ()) -> None:
        """Write a request without waiting for its reply (TEARDOWN on the way out)."""
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}", f"User-Agent: {USER_AGENT}", *headers]
        if method == "DESCRIBE":
            lines.append("Accept: application/sdp")
        if self.auth is not None:
            lines.append("Authorization: " + self.auth.header(method, uri))
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))

    async def _exchange(self, method: str, uri: str, headers: Sequence[str]) -> Reply:
        self.send(method, uri, headers)
        for _ in range(_MAX_STRAY_REPLIES):
            reply, cseq = await self._read_reply()
            if cseq is None or cseq == self.cseq:
                return reply
        raise RtspProtocolError("replies never carried our CSeq")

    async def _fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise RtspProtocolError(
                "connection closed in the middle of a reply" if self.buf else "connection closed without a reply"
            )
        self.buf += data

    async def _skip_interleaved(self) -> None:
        """Drop one ``$`` frame (channel, 16-bit length, data) at the head of ``buf``."""
        while len(self.buf) < 4:
            await self._fill()
        length = int.from_bytes(self.buf[2:4], "big")
        while len(self.buf) < 4 + length:
            await self._fill()
        self.buf = self.buf[4 + length :]

    async def _read_reply(self) -> tuple[Reply, int | None]:
        while True:
            if self.buf[:1] == b"$":
                if not self.interleaved:
                    raise RtspProtocolError("interleaved data before any reply")
                await self._skip_interleaved()
                continue
            end, sep = self.buf.find(b"\r\n\r\n"), 4
            lf = self.buf.find(b"\n\n", 0, end) if end >= 0 else self.buf.find(b"\n\n")
            if lf >= 0:
                end, sep = lf, 2
            if end >= 0:
                break
            if len(self.buf) > self.max_bytes:
                raise RtspProtocolError(f"reply header over {self.max_bytes} bytes")
            await self._fill()
        if end > self.max_bytes:
            raise RtspProtocolError(f"reply header over {self.max_bytes} bytes")
        head = self.buf[:end].decode("latin-1").lstrip("\r\n")
        rest = self.buf[end + sep :]
        status_line, _, header_text = head.partition("\n")
        parts = status_line.strip().split(None, 2)
        if len(parts) < 2 or not parts[0].upper().startswith("RTSP/") or not parts[1].isdigit():
            raise RtspProtocolError(f"not an RTSP reply: {status_line.strip()[:60]!r}")
        status = int(parts[1])
        if not 100 <= status <= 999:
            raise RtspProtocolError(f"bad status {status}")
        if header_text.count("\n") >= _MAX_HEADER_LINES:
            raise RtspProtocolError("too many reply headers")
        headers: list[tuple[str, str]] = []
        for raw in header_text.split("\n"):
            line = raw.rstrip("\r")
            name, colon, value = line.partition(":")
            if colon and name.strip():
                headers.append((name.strip().lower(), value.strip()))
        values = dict(reversed(headers))
        length_text = values.get("content-length", "0")
        if not length_text.isdigit() or len(length_text) > 12:
            raise RtspProtocolError(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if end + length > self.max_bytes:
            raise RtspProtocolError(f"reply of {end + length} bytes over the cap of {self.max_bytes}")
        self.buf = rest
        while len(self.buf) < length:
            await self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        cseq_text = values.get("cseq", "").strip()
        cseq = int(cseq_text) if cseq_text.isdigit() and len(cseq_text) < 10 else None
        reason = parts[2].strip() if len(parts) > 2 else ""
        return Reply(status, reason, tuple(headers), body), cseq


@dataclass(slots=True)
class Described:
    """An open connection whose DESCRIBE succeeded: ``uri`` is the one that answered (after redirects and the
    policy's rewrite to the device address)."""

    conn: Connection
    uri: str
    reply: Reply


async def open_described(
    target: str,
    credential: Credential | None,
    policy: AddressPolicy,
    device_ip: str,
    max_bytes: int,
    timeout: float,
    *,
    reader_limit: int | None = None,
    retry_unavailable: bool = False,
) -> Described | MediaFailure:
    """OPTIONS then DESCRIBE of ``target`` (userinfo already removed), redirects followed where the policy
    allows. Every address is checked with ``policy`` before anything connects. On success the connection stays
    open (the caller closes it); on failure it is closed. ``retry_unavailable``: a 503 is tried once more (for a
    describe alone: a session that goes on to PLAY after a 503 met gst-rtsp-server 1.22 aborting on it)."""
    unavailable_retried = not retry_unavailable
    hops = 0
    while hops <= MAX_REDIRECTS:
        scheme = urlsplit(target).scheme
        if scheme not in ("rtsp", "rtspt"):
            return MediaFailure(MediaCause.RTSP_ERROR, f"unsupported scheme {scheme[:10]!r} (rtsp over TCP only)")
        verdict = await check_async(policy, target, device_ip, timeout=timeout)
        if isinstance(verdict, Refusal):
            return MediaFailure(MediaCause.ADDRESS_REFUSED, scrub(str(verdict)))
        uri = with_host(target, verdict.ip, verdict.port) if verdict.rewritten else target
        reader, writer = await asyncio.open_connection(verdict.ip, verdict.port, limit=reader_limit or max_bytes)
        conn = Connection(reader, writer, max_bytes)
        try:
            reply = await conn.request("OPTIONS", uri, credential)
            if reply.status not in _REDIRECTS and (200 <= reply.status < 300 or reply.status in _TOLERATED_OPTIONS):
                reply = await conn.request("DESCRIBE", uri, credential)
        except BaseException:
            conn.close()
            raise
        if 200 <= reply.status < 300:
            return Described(conn, uri, reply)
        conn.close()
        if reply.status == 503 and not unavailable_retried:
            # 503 is transient by definition (RFC 2326 11.3.x, Retry-After): a camera restarting its encoder, or
            # a shared media being torn down as the last viewer leaves (gst-rtsp-server answers 503 while it
            # unprepares). One more try after a short pause, within the caller's budget; never a loop.
            unavailable_retried = True
            await asyncio.sleep(_retry_after(reply.header("retry-after")))
            continue
        hops += 1
        if reply.status in _REDIRECTS:
            location = reply.header("location")
            if not location:
                return MediaFailure(MediaCause.RTSP_ERROR, f"redirect {reply.status} without a Location")
            try:
                target, _ = clean_uri(location)
            except ValueError:
                return MediaFailure(MediaCause.RTSP_ERROR, f"redirect {reply.status} to an unusable Location")
            continue
        return status_failure(reply, credential, conn.auth)
    return MediaFailure(MediaCause.RTSP_ERROR, f"more than {MAX_REDIRECTS} redirects")


def _retry_after(value: str | None) -> float:
    """The pause before the one retry of a 503: Retry-After in seconds when given, between 0.1 and 1 s."""
    try:
        seconds = float(value) if value else _RETRY_503_S
    except ValueError:
        seconds = _RETRY_503_S
    return min(max(seconds, 0.1), 1.0)


def status_failure(reply: Reply, credential: Credential | None, auth: Authorizer | None) -> MediaFailure:
    text = scrub(f"{reply.status} {reply.reason}", secrets_of(credential))
    if reply.status == 401:
        return MediaFailure(MediaCause.RTSP_AUTH, f"{text}: {login_refused(credential, auth)}")
    if reply.status == 404:
        return MediaFailure(MediaCause.RTSP_NOT_FOUND, text)
    if reply.status == 453:
        return MediaFailure(MediaCause.RTSP_BANDWIDTH, text)
    return MediaFailure(MediaCause.RTSP_ERROR, text)


def connection_failure(exc: RtspProtocolError | OSError, secrets: tuple[str, ...]) -> MediaFailure:
    """What a broken RTSP exchange or a failed connection reports (the detail scrubbed of ``secrets``)."""
    if isinstance(exc, RtspProtocolError):
        return MediaFailure(MediaCause.RTSP_PROTOCOL, scrub(str(exc), secrets))
    if isinstance(exc, ConnectionRefusedError):
        return MediaFailure(MediaCause.RTSP_REFUSED, "connection refused")
    return MediaFailure(MediaCause.RTSP_REFUSED, connect_failed(exc))
