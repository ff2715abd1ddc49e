"""Fetch a camera's snapshot URI and check that a real JPEG of the expected size came back.

HTTP through probes.onvif.http's client (capped replies, one deadline per request, no redirects of its own):
a 401 is answered once (Digest preferred, Basic only when it is all the camera offers), redirects are followed
(at most two) only where the address policy allows. The JPEG is checked by its markers: SOI first, EOI last, and
a start-of-frame header whose height and width are the picture's size (an HTML login page, a truncated picture
or a 0x0 placeholder is not a snapshot).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin, urlsplit

from probes.errors import scrub
from probes.media._auth import (
    Authorizer,
    clean_uri,
    connect_failed,
    login_of,
    login_refused,
    with_host,
)
from probes.media.causes import MediaCause, MediaFailure
from probes.onvif.auth import Credential
from probes.onvif.http import HttpClient, HttpError, ReplyTooLarge, Response, host_header
from probes.policy import AddressPolicy, Refusal, check_async

__all__ = ["SnapshotInfo", "fetch_snapshot", "jpeg_size"]

_MAX_REDIRECTS: Final = 2
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Start-of-frame markers (ITU-T T.81 B.1.1.3): SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..7: no length field


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    width: int
    height: int
    size: int  # bytes
    content_type: str | None
    data: bytes = field(default=b"", repr=False, compare=False)  # the JPEG itself, only when asked (keep=True)


def jpeg_size(data: bytes) -> tuple[int, int] | str:
    """(width, height) of a JPEG, or why it is not one (SOI/EOI missing, no frame header, zero size)."""
    if data[:2] != b"\xff\xd8":
        return "does not start with a JPEG SOI marker"
    if data.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":  # some cameras pad after EOI
        return "does not end with a JPEG EOI marker (truncated?)"
    pos = 2
    end = len(data)
    for _ in range(4096):  # bounded: a segment walk, not a scan of the entropy-coded data
        while pos < end and data[pos] == 0xFF and pos + 1 < end and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > end or data[pos] != 0xFF:
            return "broken JPEG segment structure"
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            return "no JPEG frame header before the image data"
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return "broken JPEG segment length"
        if marker in _SOF:
            if pos + 9 > end:
                return "truncated JPEG frame header"
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if not width or not height:
                return f"JPEG frame header gives {width}x{height}"
            return width, height
        pos += 2 + length
    return "too many JPEG segments before the frame header"


async def fetch_snapshot(
    url: str,
    *,
    username: str | None,
    password: str | None,
    timeout: float,
    policy: AddressPolicy,
    device_ip: str,
    max_bytes: int = 8 * 1024 * 1024,
    expect: tuple[int, int] | None = None,
    client: HttpClient | None = None,
    keep: bool = False,
) -> SnapshotInfo | MediaFailure:
    """GET ``url`` within ``timeout`` seconds in all and check the JPEG (and its size against ``expect``, as
    (width, height)). ``client``: a shared HTTP client (pooled connections); a private one otherwise.
    ``keep``: the JPEG's bytes come back in ``SnapshotInfo.data`` (the frame sampler decodes them)."""
    try:
        target, credential, secrets = login_of(url, username, password)
    except ValueError as exc:
        return MediaFailure(MediaCause.SNAPSHOT_HTTP, f"unusable snapshot URI ({exc})")
    own = client is None
    http = client if client is not None else HttpClient(limit_per_host=1, keepalive_s=1.0)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(http, target, credential, policy, device_ip, max_bytes, expect, timeout, keep)
    except TimeoutError:
        return MediaFailure(MediaCause.SNAPSHOT_TIMEOUT, f"no complete answer in {timeout:g} s")
    except ReplyTooLarge as exc:
        return MediaFailure(MediaCause.SNAPSHOT_TOO_LARGE, str(exc))
    except HttpError as exc:
        return MediaFailure(MediaCause.SNAPSHOT_HTTP, scrub(f"broken HTTP reply ({exc})", secrets))
    except ConnectionRefusedError:
        return MediaFailure(MediaCause.SNAPSHOT_REFUSED, "connection refused")
    except ssl.SSLError as exc:
        return MediaFailure(MediaCause.SNAPSHOT_REFUSED, scrub(f"TLS failed ({exc.reason or type(exc).__name__})"))
    except OSError as exc:
        return MediaFailure(MediaCause.SNAPSHOT_REFUSED, connect_failed(exc))
    finally:
        if own:
            await http.close()


async def _fetch(
    http: HttpClient,
    target: str,
    credential: Credential | None,
    policy: AddressPolicy,
    device_ip: str,
    max_bytes: int,
    expect: tuple[int, int] | None,
    timeout: float,
    keep: bool,
) -> SnapshotInfo | MediaFailure:
    auth: Authorizer | None = None
    for _hop in range(_MAX_REDIRECTS + 1):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https"):
            return MediaFailure(MediaCause.SNAPSHOT_HTTP, f"unsupported scheme {parts.scheme[:10]!r}")
        verdict = await check_async(policy, target, device_ip, timeout=timeout)
        if isinstance(verdict, Refusal):
            return MediaFailure(MediaCause.ADDRESS_REFUSED, scrub(str(verdict)))
        shown = urlsplit(with_host(target, verdict.ip, verdict.port) if verdict.rewritten else target)
        host = host_header(shown.hostname or verdict.ip, verdict.port, parts.scheme)
        path = (shown.path or "/") + (f"?{shown.query}" if shown.query else "")

        where = (verdict.ip, verdict.port, parts.scheme)
        reply = await _get(http, where, host, path, auth.header("GET", path) if auth else None, timeout, max_bytes)
        if reply.status == 401 and credential is not None and auth is None:
            auth = Authorizer.from_challenge(credential, reply.header_all("www-authenticate"))
            if auth is not None:
                reply = await _get(http, where, host, path, auth.header("GET", path), timeout, max_bytes)
        if reply.status in _REDIRECTS:
            location = reply.header("location")
            if not location:
                return MediaFailure(MediaCause.SNAPSHOT_HTTP, f"redirect {reply.status} without a Location")
            try:
                target, _ = clean_uri(urljoin(target, location))
            except ValueError:
                return MediaFailure(MediaCause.SNAPSHOT_HTTP, f"redirect {reply.status} to an unusable Location")
            auth = None  # a challenge belongs to its server
            continue
        return _verdict(reply, credential, auth, expect, keep)
    return MediaFailure(MediaCause.SNAPSHOT_HTTP, f"more than {_MAX_REDIRECTS} redirects")


async def _get(
    http: HttpClient,
    where: tuple[str, int, str],
    host: bytes,
    path: str,
    authorization: str | None,
    timeout: float,
    max_bytes: int,
) -> Response:
    extra = b"Accept: image/jpeg, */*\r\n"
    if authorization is not None:
        extra += b"Authorization: " + authorization.encode("latin-1") + b"\r\n"
    data = http.build(b"GET", host, path.encode("ascii", "replace"), extra, b"")
    ip, port, scheme = where
    return await http.request(ip, port, scheme, data, timeout=timeout, max_bytes=max_bytes)


def _verdict(
    reply: Response,
    credential: Credential | None,
    auth: Authorizer | None,
    expect: tuple[int, int] | None,
    keep: bool = False,
) -> SnapshotInfo | MediaFailure:
    if reply.status == 401:
        return MediaFailure(MediaCause.SNAPSHOT_AUTH, f"HTTP 401: {login_refused(credential, auth)}")
    if reply.status != 200:
        return MediaFailure(MediaCause.SNAPSHOT_HTTP, f"HTTP {reply.status}")
    content_type = reply.header("content-type")
    shown_type = scrub(content_type)[:80] if content_type else None
    size = jpeg_size(reply.body)
    if isinstance(size, str):
        what = f"{len(reply.body)} bytes of {shown_type or 'no content type'}"
        return MediaFailure(MediaCause.SNAPSHOT_NOT_JPEG, f"{size}; {what}")
    width, height = size
    if expect is not None and (width, height) != tuple(expect):
        return MediaFailure(MediaCause.SNAPSHOT_SIZE, f"{width}x{height}, expected {expect[0]}x{expect[1]}")
    return SnapshotInfo(width, height, len(reply.body), shown_type, bytes(reply.body) if keep else b"")
