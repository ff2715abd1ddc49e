"""RTSP OPTIONS and DESCRIBE of a camera stream over TCP (RFC 2326), the SDP parsed: is the stream there, and what.

No RTP is set up: the check asks the camera to describe the stream, which is what fails when its encoder is dead,
the path is wrong, the credentials are wrong or its stream slots are taken (453). One TCP connection carries both
requests; a 401 challenge is answered once (Digest preferred, Basic only when it is all the camera offers) and a
second 401 is the verdict, so a wrong password costs one failed login, never a loop. Replies are capped (header
and body together ``max_reply_bytes``), the whole exchange has one deadline, and redirects are followed (at most
two) only where the address policy allows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from probes.errors import scrub
from probes.media._auth import (
    Authorizer,
    clean_uri,
    connect_failed,
    login_refused,
    pick_credential,
    secrets_of,
    with_host,
)
from probes.media.causes import MediaCause, MediaFailure
from probes.media.sdp import parse_sdp
from probes.onvif.auth import Credential, parse_digest_challenges
from probes.policy import AddressPolicy, Refusal, check_async

__all__ = ["RtspInfo", "rtsp_describe"]

_USER_AGENT: Final = "vms-probe/0.1"
_MAX_REDIRECTS: Final = 2
_MAX_HEADER_LINES: Final = 128
_MAX_STRAY_REPLIES: Final = 4  # replies with another CSeq skipped before giving up
_TOLERATED_OPTIONS: Final = frozenset({400, 403, 405, 451, 501, 551})  # OPTIONS badly done; DESCRIBE decides
_REDIRECTS: Final = frozenset({301, 302, 303, 305, 307, 308})


@dataclass(frozen=True, slots=True)
class RtspInfo:
    codec: str | None  # the video track's encoding name: "H264", "H265", "JPEG", "MP4V-ES"
    width: int | None
    height: int | None
    tracks: tuple[str, ...]  # "video/H264", "audio/PCMA", "application/VND.ONVIF.METADATA"
    server: str | None  # the Server header, shortened


class _Protocol(Exception):
    """The peer does not speak RTSP as we can read it (garbage, over the caps, closed mid-reply)."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_bytes: int) -> None:
        self.reader = reader
        self.writer = writer
        self.max_bytes = max_bytes
        self.cseq = 0
        self.buf = b""
        self.auth: Authorizer | None = None
        self.accepted = False  # a request carrying our Authorization was not refused
        self.renewed = False

    def close(self) -> None:
        self.writer.transport.abort()

    async def request(self, method: str, uri: str, credential: Credential | None) -> _Reply:
        """Send ``method``; answer a 401 once when we have a credential and have not yet answered one. A login
        already accepted on this connection is renewed once when the camera calls its nonce stale (RFC 7616
        3.3: the credential was right, the nonce expired); any other 401 stands."""
        reply = await self._exchange(method, uri)
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
        reply = await self._exchange(method, uri)
        self.accepted = reply.status != 401
        return reply

    async def _exchange(self, method: str, uri: str) -> _Reply:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}", f"User-Agent: {_USER_AGENT}"]
        if method == "DESCRIBE":
            lines.append("Accept: application/sdp")
        if self.auth is not None:
            lines.append("Authorization: " + self.auth.header(method, uri))
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        for _ in range(_MAX_STRAY_REPLIES):
            reply, cseq = await self._read_reply()
            if cseq is None or cseq == self.cseq:
                return reply
        raise _Protocol("replies never carried our CSeq")

    async def _fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise _Protocol(
                "connection closed in the middle of a reply" if self.buf else "connection closed without a reply"
            )
        self.buf += data

    async def _read_reply(self) -> tuple[_Reply, int | None]:
        while True:
            end, sep = self.buf.find(b"\r\n\r\n"), 4
            lf = self.buf.find(b"\n\n", 0, end) if end >= 0 else self.buf.find(b"\n\n")
            if lf >= 0:
                end, sep = lf, 2
            if end >= 0:
                break
            if len(self.buf) > self.max_bytes:
                raise _Protocol(f"reply header over {self.max_bytes} bytes")
            if self.buf[:1] == b"$":
                raise _Protocol("interleaved data before any reply")
            await self._fill()
        if end > self.max_bytes:
            raise _Protocol(f"reply header over {self.max_bytes} bytes")
        head = self.buf[:end].decode("latin-1").lstrip("\r\n")
        rest = self.buf[end + sep :]
        status_line, _, header_text = head.partition("\n")
        parts = status_line.strip().split(None, 2)
        if len(parts) < 2 or not parts[0].upper().startswith("RTSP/") or not parts[1].isdigit():
            raise _Protocol(f"not an RTSP reply: {status_line.strip()[:60]!r}")
        status = int(parts[1])
        if not 100 <= status <= 999:
            raise _Protocol(f"bad status {status}")
        if header_text.count("\n") >= _MAX_HEADER_LINES:
            raise _Protocol("too many reply headers")
        headers: list[tuple[str, str]] = []
        for raw in header_text.split("\n"):
            line = raw.rstrip("\r")
            name, colon, value = line.partition(":")
            if colon and name.strip():
                headers.append((name.strip().lower(), value.strip()))
        values = dict(reversed(headers))
        length_text = values.get("content-length", "0")
        if not length_text.isdigit() or len(length_text) > 12:
            raise _Protocol(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if end + length > self.max_bytes:
            raise _Protocol(f"reply of {end + length} bytes over the cap of {self.max_bytes}")
        self.buf = rest
        while len(self.buf) < length:
            await self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        cseq_text = values.get("cseq", "").strip()
        cseq = int(cseq_text) if cseq_text.isdigit() and len(cseq_text) < 10 else None
        reason = parts[2].strip() if len(parts) > 2 else ""
        return _Reply(status, reason, tuple(headers), body), cseq


async def rtsp_describe(
    url: str,
    *,
    username: str | None,
    password: str | None,
    timeout: float,
    policy: AddressPolicy,
    device_ip: str,
    max_reply_bytes: int = 64 * 1024,
) -> RtspInfo | MediaFailure:
    """OPTIONS then DESCRIBE of ``url`` over TCP, within ``timeout`` seconds in all; the SDP's video track.

    ``username``/``password``: the camera's credential (the URI's userinfo only when none is given). Every address
    (the URI, a redirect) is checked with ``policy`` for the device at ``device_ip`` before anything connects."""
    try:
        target, from_uri = clean_uri(url)
    except ValueError as exc:
        return MediaFailure(MediaCause.RTSP_PROTOCOL, f"unusable stream URI ({exc})")
    credential = pick_credential(username, password, from_uri)
    secrets = secrets_of(credential)
    try:
        async with asyncio.timeout(timeout):
            return await _describe(target, credential, policy, device_ip, max_reply_bytes, timeout)
    except TimeoutError:
        return MediaFailure(MediaCause.RTSP_TIMEOUT, f"no complete answer in {timeout:g} s")
    except _Protocol as exc:
        return MediaFailure(MediaCause.RTSP_PROTOCOL, scrub(str(exc), secrets))
    except ConnectionRefusedError:
        return MediaFailure(MediaCause.RTSP_REFUSED, "connection refused")
    except OSError as exc:
        return MediaFailure(MediaCause.RTSP_REFUSED, connect_failed(exc))


async def _describe(
    target: str,
    credential: Credential | None,
    policy: AddressPolicy,
    device_ip: str,
    max_bytes: int,
    timeout: float,
) -> RtspInfo | MediaFailure:
    for _hop in range(_MAX_REDIRECTS + 1):
        scheme = urlsplit(target).scheme
        if scheme not in ("rtsp", "rtspt"):
            return MediaFailure(MediaCause.RTSP_ERROR, f"unsupported scheme {scheme[:10]!r} (rtsp over TCP only)")
        verdict = await check_async(policy, target, device_ip, timeout=timeout)
        if isinstance(verdict, Refusal):
            return MediaFailure(MediaCause.ADDRESS_REFUSED, scrub(str(verdict)))
        uri = with_host(target, verdict.ip, verdict.port) if verdict.rewritten else target
        reader, writer = await asyncio.open_connection(verdict.ip, verdict.port, limit=max_bytes)
        conn = _Connection(reader, writer, max_bytes)
        try:
            reply = await conn.request("OPTIONS", uri, credential)
            if reply.status not in _REDIRECTS and (200 <= reply.status < 300 or reply.status in _TOLERATED_OPTIONS):
                reply = await conn.request("DESCRIBE", uri, credential)
        finally:
            conn.close()
        if reply.status in _REDIRECTS:
            location = reply.header("location")
            if not location:
                return MediaFailure(MediaCause.RTSP_ERROR, f"redirect {reply.status} without a Location")
            try:
                target, _ = clean_uri(location)
            except ValueError:
                return MediaFailure(MediaCause.RTSP_ERROR, f"redirect {reply.status} to an unusable Location")
            continue
        if not 200 <= reply.status < 300:
            return _status_failure(reply, credential, conn.auth)
        return _info(reply, secrets_of(credential))
    return MediaFailure(MediaCause.RTSP_ERROR, f"more than {_MAX_REDIRECTS} redirects")


def _status_failure(reply: _Reply, credential: Credential | None, auth: Authorizer | None) -> MediaFailure:
    text = scrub(f"{reply.status} {reply.reason}", secrets_of(credential))
    if reply.status == 401:
        return MediaFailure(MediaCause.RTSP_AUTH, f"{text}: {login_refused(credential, auth)}")
    if reply.status == 404:
        return MediaFailure(MediaCause.RTSP_NOT_FOUND, text)
    if reply.status == 453:
        return MediaFailure(MediaCause.RTSP_BANDWIDTH, text)
    return MediaFailure(MediaCause.RTSP_ERROR, text)


def _info(reply: _Reply, secrets: tuple[str, ...]) -> RtspInfo | MediaFailure:
    try:
        session = parse_sdp(reply.body.decode("utf-8", errors="replace"))
    except ValueError as exc:
        return MediaFailure(MediaCause.RTSP_PROTOCOL, f"DESCRIBE reply is not an SDP ({exc})")
    tracks = tuple(f"{m.kind}/{m.codec or '?'}" for m in session.media)
    video = session.video
    if video is None:
        return MediaFailure(MediaCause.RTSP_NO_VIDEO, "SDP tracks: " + (", ".join(tracks) or "none"))
    server = reply.header("server")
    return RtspInfo(video.codec, video.width, video.height, tracks, scrub(server, secrets)[:120] if server else None)
