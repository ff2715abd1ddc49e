"""Frames from an RTSP stream: our own PLAY session over TCP interleaved (RFC 2326 10.12), RTP depacketised to
H.264/H.265 access units (probes.frames.rtp), the first complete keyframe decoded by libavcodec (PyAV).

Why not FFmpeg's networking (cv2.VideoCapture, av.open on the URL): it would connect wherever the URI (or a
redirect) points, put the credential into a URL, read and decode for as long as it likes and probe the stream
first. Here every connection passes the address policy first, a 401 is answered once with Digest (Basic only when
it is all the camera offers), every wait has a deadline and every buffer a cap, and reading stops at the first
complete keyframe: only that access unit is decoded.

Budgets (:class:`SampleTimeouts`): ``connect`` covers the policy check, TCP connect and the OPTIONS, DESCRIBE,
SETUP and PLAY replies (rtsp_timeout); ``first_frame`` runs from the PLAY reply to a complete keyframe
(frame_timeout; for further frames, from the moment they are due); ``total`` bounds everything, decoding included.
``max_bytes`` caps what is read after PLAY before a keyframe completes (frame_too_large).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from probes.errors import scrub
from probes.frames.frame import DecodeError, Frame, SampleTimeouts, decode_picture, in_decoder_thread
from probes.frames.rtp import Depacketizer, depacketizer_for, parse_rtp
from probes.media._auth import clean_uri, login_of
from probes.media._rtsp import Connection, RtspProtocolError, connection_failure, open_described, status_failure
from probes.media.causes import MediaCause, MediaFailure
from probes.media.sdp import SdpMedia, parse_sdp
from probes.onvif.auth import Credential
from probes.policy import AddressPolicy

__all__ = ["sample_rtsp"]

_MAX_REPLY_BYTES: Final = 64 * 1024  # an RTSP reply with its SDP
_READ_CHUNK: Final = 64 * 1024  # also the stream reader's limit: at most ~2 chunks wait in the transport
_COMPACT_AT: Final = 32 * 1024  # consumed bytes dropped from the read buffer once this many
_MIN_RTP: Final = 12
_GARBAGE_AFTER: Final = 16  # packets seen before the share of unreadable ones decides (then at every packet)
_MAX_SERVER_MESSAGE: Final = 8 * 1024  # an RTSP request or reply the server slips between RTP frames
_MAX_SESSION_ID: Final = 256


class _FrameDecode(Exception):
    """The payload is not the codec the SDP announced (or no codec we decode)."""


@dataclass
class _Progress:
    playing: bool = False
    started: float = 0.0
    first_byte: float | None = None
    bytes_read: int = 0  # after PLAY
    since_key: int = 0  # bytes read since the last captured keyframe (or PLAY)
    units: list[tuple[bytes, int, float]] = field(default_factory=list)  # (Annex-B, bytes_read, captured at)


async def sample_rtsp(
    url: str,
    *,
    username: str | None,
    password: str | None,
    policy: AddressPolicy,
    device_ip: str,
    timeouts: SampleTimeouts = SampleTimeouts(),
    frames: int = 1,
    spacing_s: float = 0.0,
    max_bytes: int = 16 * 2**20,
) -> list[Frame] | MediaFailure:
    """``frames`` keyframes of the stream at ``url`` (further ones at least ``spacing_s`` apart on the same
    session), decoded to BGR; fewer when the stream stops giving keyframes after the first. ``username`` and
    ``password``: the camera's credential (the URI's userinfo only when none is given); never sent in a URI,
    never in a detail."""
    progress = _Progress(started=time.monotonic())
    try:
        target, credential, secrets = login_of(url, username, password)
    except ValueError as exc:
        return MediaFailure(MediaCause.RTSP_PROTOCOL, f"unusable stream URI ({exc})")
    frames = max(1, frames)
    codec = ""
    try:
        async with asyncio.timeout(timeouts.total):
            got = await _session(
                target, credential, policy, device_ip, timeouts, frames, spacing_s, max_bytes, progress
            )
            if isinstance(got, MediaFailure):
                return got
            codec = got
            return await _decode(codec, progress)
    except TimeoutError:
        if progress.units and codec:
            return MediaFailure(MediaCause.FRAME_DECODE, f"decoding took over the {timeouts.total:g} s budget")
        if progress.playing:
            return _no_keyframe(progress, timeouts.total)
        return MediaFailure(MediaCause.RTSP_TIMEOUT, f"no complete answer in {timeouts.total:g} s")
    except _FrameDecode as exc:
        return MediaFailure(MediaCause.FRAME_DECODE, scrub(str(exc), secrets))
    except (RtspProtocolError, OSError) as exc:
        return connection_failure(exc, secrets)


def _no_keyframe(progress: _Progress, budget: float) -> MediaFailure:
    what = "no RTP at all" if progress.first_byte is None else f"{progress.bytes_read} bytes read"
    return MediaFailure(MediaCause.FRAME_TIMEOUT, f"no complete keyframe in {budget:g} s ({what})")


async def _decode(codec: str, progress: _Progress) -> list[Frame] | MediaFailure:
    out: list[Frame] = []
    first_byte = progress.first_byte
    for data, read, captured in progress.units:
        began = time.monotonic()
        try:
            picture = await in_decoder_thread(decode_picture, codec, data)
        except DecodeError as exc:
            if out:
                break  # keep the frames that decoded
            return MediaFailure(MediaCause.FRAME_DECODE, str(exc))
        image = picture.image
        height, width = image.shape[:2]
        out.append(
            Frame(
                image=image,
                luma=picture.luma,
                luma_full_range=picture.luma_full_range,
                width=width,
                height=height,
                codec=codec,
                source="rtsp",
                latency_ms=(captured - progress.started + time.monotonic() - began) * 1000.0,
                first_byte_ms=(first_byte - progress.started) * 1000.0 if first_byte is not None else None,
                bytes_read=read,
            )
        )
    progress.units.clear()
    return out


def _control_uri(base: str, media: SdpMedia) -> str:
    """The SETUP URI of a track: an absolute ``a=control`` as is (userinfo removed), a relative one appended to
    the base (as FFmpeg and live555 do; RFC 2326 C.1.1), ``*`` or none: the base itself."""
    control = (media.control or "").strip()
    if not control or control == "*":
        return base
    if "://" in control[:10]:
        try:
            return clean_uri(control)[0]
        except ValueError:
            return base
    return base + ("" if base.endswith("/") else "/") + control.lstrip("/")


def _base_uri(uri: str, content_base: str | None) -> str:
    if content_base:
        try:
            base, _ = clean_uri(content_base)
        except ValueError:
            return uri
        if urlsplit(base).scheme in ("rtsp", "rtspt"):
            return base.rstrip("/") if not content_base.strip().endswith("/") else base
    return uri


def _interleaved_channel(transport: str | None) -> int:
    for part in (transport or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "interleaved":
            first = value.partition("-")[0].strip()
            if first.isdigit() and int(first) < 256:
                return int(first)
    return 0


async def _session(
    target: str,
    credential: Credential | None,
    policy: AddressPolicy,
    device_ip: str,
    timeouts: SampleTimeouts,
    frames: int,
    spacing_s: float,
    max_bytes: int,
    progress: _Progress,
) -> str | MediaFailure:
    """Run the session; the captured keyframes go to ``progress.units``. The codec name, or why not."""
    conn: Connection | None = None
    session_id: str | None = None
    base = target
    try:
        try:
            async with asyncio.timeout(timeouts.connect):
                described = await open_described(
                    target, credential, policy, device_ip, _MAX_REPLY_BYTES, timeouts.connect, reader_limit=_READ_CHUNK
                )
                if isinstance(described, MediaFailure):
                    return described
                conn = described.conn
                try:
                    sdp = parse_sdp(described.reply.body.decode("utf-8", errors="replace"))
                except ValueError as exc:
                    return MediaFailure(MediaCause.RTSP_PROTOCOL, f"DESCRIBE reply is not an SDP ({exc})")
                video = sdp.video
                if video is None:
                    tracks = ", ".join(f"{m.kind}/{m.codec or '?'}" for m in sdp.media) or "none"
                    return MediaFailure(MediaCause.RTSP_NO_VIDEO, f"SDP tracks: {tracks}")
                dep = depacketizer_for(video.codec or "", video.fmtp, max_au_bytes=max_bytes)
                if dep is None:
                    shown = scrub(video.codec or "no codec")[:24]
                    return MediaFailure(MediaCause.FRAME_DECODE, f"{shown} video: the sampler decodes H.264 and H.265")
                base = _base_uri(described.uri, described.reply.header("content-base"))
                reply = await conn.request(
                    "SETUP", _control_uri(base, video), credential, ("Transport: RTP/AVP/TCP;unicast;interleaved=0-1",)
                )
                if not 200 <= reply.status < 300:
                    return status_failure(reply, credential, conn.auth)
                session_id = (reply.header("session") or "").partition(";")[0].strip() or None
                if session_id is not None and (len(session_id) > _MAX_SESSION_ID or not session_id.isprintable()):
                    raise RtspProtocolError("unusable Session header")
                transport = reply.header("transport")
                if transport is not None and "interleaved" not in transport.lower() and "/TCP" not in transport.upper():
                    shown = scrub(transport)[:80]
                    return MediaFailure(MediaCause.RTSP_ERROR, f"the camera set up RTP over UDP ({shown}), not TCP")
                channel = _interleaved_channel(transport)
                conn.interleaved = True
                headers = (*((f"Session: {session_id}",) if session_id else ()), "Range: npt=0.000-")
                reply = await conn.request("PLAY", base, credential, headers)
                if not 200 <= reply.status < 300:
                    return status_failure(reply, credential, conn.auth)
        except TimeoutError:
            return MediaFailure(MediaCause.RTSP_TIMEOUT, f"no complete answer in {timeouts.connect:g} s")
        progress.playing = True
        try:
            await _read_keyframes(conn, dep, video.payload, channel, timeouts, frames, spacing_s, max_bytes, progress)
        except TimeoutError:
            if not progress.units:
                return _no_keyframe(progress, timeouts.first_frame)
        except _TooLarge:
            if not progress.units:
                return MediaFailure(
                    MediaCause.FRAME_TOO_LARGE, f"no complete keyframe in the first {max_bytes} bytes of the stream"
                )
        return dep.codec
    finally:
        if conn is not None:
            _teardown(conn, base, session_id)


class _TooLarge(Exception):
    pass


def _teardown(conn: Connection, uri: str, session_id: str | None) -> None:
    """Say goodbye without waiting for the answer: TEARDOWN written, the connection closed once it is sent (a
    camera frees the slot when the connection closes in any case)."""
    try:
        if session_id is not None and not conn.writer.is_closing():
            conn.send("TEARDOWN", uri, (f"Session: {session_id}",))
            conn.writer.close()
            return
    except (OSError, RuntimeError):
        pass
    conn.close()


async def _read_keyframes(
    conn: Connection,
    dep: Depacketizer,
    payload_type: int | None,
    channel: int,
    timeouts: SampleTimeouts,
    frames: int,
    spacing_s: float,
    max_bytes: int,
    progress: _Progress,
) -> None:
    loop = asyncio.get_running_loop()
    reader = conn.reader
    buf = bytearray(conn.buf)  # what came with the PLAY reply
    conn.buf = b""
    if buf:
        progress.first_byte = time.monotonic()
        progress.bytes_read = progress.since_key = len(buf)
    pos = 0
    not_rtp = 0
    seen = 0
    due = 0.0  # monotonic time from which the next keyframe counts
    async with asyncio.timeout(timeouts.first_frame) as deadline:
        while True:
            if len(buf) - pos < 4:
                await _fill(reader, buf, progress)
                continue
            if buf[pos] != 0x24:
                pos = await _skip_message(reader, buf, pos, progress)
                continue
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            while len(buf) - pos < 4 + length:
                await _fill(reader, buf, progress)
            start, pos = pos + 4, pos + 4 + length
            if buf[start - 3] == channel:
                seen += 1
                if dep.continue_fragment(buf, start, pos, payload_type):
                    pass  # the next piece of a fragmented NAL unit (most packets of a keyframe): taken as is
                elif (packet := parse_rtp(bytes(buf[start:pos])) if length >= _MIN_RTP else None) is None:
                    not_rtp += 1
                    if seen >= _GARBAGE_AFTER and not_rtp * 2 > seen:
                        raise RtspProtocolError(f"{not_rtp} of {seen} interleaved frames are not RTP")
                elif payload_type is None or packet.payload_type == payload_type:
                    for unit in dep.push(packet):
                        data = dep.decodable(unit) if unit.keyframe else None
                        if data is None or time.monotonic() < due:
                            continue
                        now = time.monotonic()
                        progress.units.append((data, progress.bytes_read, now))
                        progress.since_key = 0
                        if len(progress.units) >= frames:
                            return
                        due = now + spacing_s
                        deadline.reschedule(loop.time() + spacing_s + timeouts.first_frame)
                    if not progress.units and dep.packets >= _GARBAGE_AFTER and dep.malformed * 3 > dep.packets:
                        raise _FrameDecode(
                            f"{dep.malformed} of {dep.packets} RTP packets are not {dep.codec} as RFC 6184/7798 "
                            "packs it"
                        )
            if progress.since_key > max_bytes:
                raise _TooLarge
            if pos >= _COMPACT_AT:
                del buf[:pos]
                pos = 0


async def _fill(reader: asyncio.StreamReader, buf: bytearray, progress: _Progress) -> None:
    data = await reader.read(_READ_CHUNK)
    if not data:
        raise RtspProtocolError("the camera closed the stream before a complete keyframe")
    if progress.first_byte is None:
        progress.first_byte = time.monotonic()
    progress.bytes_read += len(data)
    progress.since_key += len(data)
    buf += data


async def _skip_message(reader: asyncio.StreamReader, buf: bytearray, pos: int, progress: _Progress) -> int:
    """Skip an RTSP message (a server's request such as SET_PARAMETER, or a stray reply) between RTP frames;
    anything else there is not RTSP interleaving. The position after it."""
    while True:
        if not 0x41 <= buf[pos] <= 0x5A:  # methods and "RTSP/1.0" start with an upper-case letter
            raise RtspProtocolError("data that is neither interleaved RTP nor RTSP after PLAY")
        end = buf.find(b"\r\n\r\n", pos, pos + _MAX_SERVER_MESSAGE)
        if end >= 0:
            break
        newline = buf.find(b"\n", pos, pos + 256)
        if (newline >= 0 and b"RTSP/1." not in buf[pos:newline]) or len(buf) - pos >= _MAX_SERVER_MESSAGE:
            raise RtspProtocolError("data that is neither interleaved RTP nor RTSP after PLAY")
        await _fill(reader, buf, progress)
    head = bytes(buf[pos:end]).decode("latin-1")
    if "RTSP/1." not in head.partition("\n")[0]:
        raise RtspProtocolError("data that is neither interleaved RTP nor RTSP after PLAY")
    length = 0
    for line in head.split("\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            value = value.strip()
            if not value.isdigit() or int(value[:7]) > _MAX_SERVER_MESSAGE:
                raise RtspProtocolError("an RTSP message of the camera's over the size cap after PLAY")
            length = int(value)
    while len(buf) - (end + 4) < length:
        await _fill(reader, buf, progress)
    return end + 4 + length
