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

from probes.errors import scrub
from probes.media._auth import login_of, secrets_of
from probes.media._rtsp import Reply, RtspProtocolError, connection_failure, open_described
from probes.media.causes import MediaCause, MediaFailure
from probes.media.sdp import parse_sdp
from probes.onvif.auth import Credential
from probes.policy import AddressPolicy

__all__ = ["RtspInfo", "rtsp_describe"]


@dataclass(frozen=True, slots=True)
class RtspInfo:
    codec: str | None  # the video track's encoding name: "H264", "H265", "JPEG", "MP4V-ES"
    width: int | None
    height: int | None
    tracks: tuple[str, ...]  # "video/H264", "audio/PCMA", "application/VND.ONVIF.METADATA"
    server: str | None  # the Server header, shortened


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
        target, credential, secrets = login_of(url, username, password)
    except ValueError as exc:
        return MediaFailure(MediaCause.RTSP_PROTOCOL, f"unusable stream URI ({exc})")
    try:
        async with asyncio.timeout(timeout):
            return await _describe(target, credential, policy, device_ip, max_reply_bytes, timeout)
    except TimeoutError:
        return MediaFailure(MediaCause.RTSP_TIMEOUT, f"no complete answer in {timeout:g} s")
    except (RtspProtocolError, OSError) as exc:
        return connection_failure(exc, secrets)


async def _describe(
    target: str,
    credential: Credential | None,
    policy: AddressPolicy,
    device_ip: str,
    max_bytes: int,
    timeout: float,
) -> RtspInfo | MediaFailure:
    described = await open_described(target, credential, policy, device_ip, max_bytes, timeout, retry_unavailable=True)
    if isinstance(described, MediaFailure):
        return described
    described.conn.close()
    return _info(described.reply, secrets_of(credential))


def _info(reply: Reply, secrets: tuple[str, ...]) -> RtspInfo | MediaFailure:
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
