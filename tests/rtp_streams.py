"""Streams for the frame sampler's tests, made here: frames encoded with PyAV (libx264 / libx265 from its wheel),
split into NAL units and packed into RTP (RFC 6184 / RFC 7798: single NAL units, STAP-A / AP, FU-A / FU) and
RTSP interleaved frames, so that a test knows every byte a camera would send."""

from __future__ import annotations

import base64
import re
from fractions import Fraction
from functools import cache

import av
import numpy as np

_START = re.compile(b"\x00\x00\x00?\x01")


def split_annexb(data: bytes) -> list[bytes]:
    return [nal for nal in _START.split(data) if nal]


def test_picture(width: int, height: int, index: int) -> np.ndarray:
    """A BGR picture with detail that moves with ``index`` (so P-frames are not empty)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 3 + index * 7) % 256
    image[..., 1] = (y * 2 + index * 5) % 256
    image[..., 2] = ((x // 16 + y // 16) % 2) * 200 + 20
    return image


@cache
def encode(codec: str, width: int, height: int, count: int, gop: int) -> tuple[tuple[tuple[bytes, ...], bool], ...]:
    """``count`` access units of a synthetic clip: (NAL units, keyframe?), parameter sets in-band before every
    keyframe. ``codec``: "H264" or "H265"."""
    enc = av.CodecContext.create("libx264", "w") if codec == "H264" else av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 10)
    enc.framerate = Fraction(10)
    enc.gop_size = gop
    if codec == "H264":
        enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": f"keyint={gop}:repeat-headers=1"}
    else:
        enc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x265-params": f"keyint={gop}:repeat-headers=1:log-level=none",
        }
    units: list[tuple[tuple[bytes, ...], bool]] = []
    packets = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(test_picture(width, height, i), format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        packets += list(enc.encode(frame))
    packets += list(enc.encode(None))
    for packet in packets:
        units.append((tuple(split_annexb(bytes(packet))), bool(packet.is_keyframe)))
    return tuple(units)


def nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "H264" else (nal[0] >> 1) & 0x3F


def sprop(codec: str, units: tuple[tuple[tuple[bytes, ...], bool], ...]) -> str:
    """The fmtp parameter sets of the clip for the SDP."""
    nals = [nal for unit, _ in units for nal in unit]
    first: dict[int, bytes] = {}
    for nal in nals:
        first.setdefault(nal_type(codec, nal), nal)

    def b64(nal: bytes) -> str:
        return base64.b64encode(nal).decode()

    if codec == "H264":
        return f"packetization-mode=1;sprop-parameter-sets={b64(first[7])},{b64(first[8])}"
    return f"sprop-vps={b64(first[32])};sprop-sps={b64(first[33])};sprop-pps={b64(first[34])}"


def rtp(payload: bytes, *, seq: int, ts: int, marker: bool, pt: int = 96, ssrc: int = 0x1234) -> bytes:
    return (
        bytes([0x80, (0x80 if marker else 0) | pt])
        + (seq & 0xFFFF).to_bytes(2, "big")
        + (ts & 0xFFFFFFFF).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def payloads(codec: str, nals: list[bytes] | tuple[bytes, ...], mtu: int = 1200, aggregate: bool = True) -> list[bytes]:
    """RTP payloads of one access unit: small NAL units aggregated (STAP-A / AP), big ones fragmented (FU-A / FU),
    the rest single."""
    out: list[bytes] = []
    small: list[bytes] = []

    def flush() -> None:
        if len(small) == 1:
            out.append(small[0])
        elif small:
            h264 = bytes([max(n[0] & 0x60 for n in small) | 24])
            head = h264 if codec == "H264" else bytes([48 << 1, 1])
            out.append(head + b"".join(len(n).to_bytes(2, "big") + n for n in small))
        small.clear()

    for nal in nals:
        if len(nal) <= mtu:
            if aggregate and sum(len(n) + 2 for n in small) + len(nal) + 3 <= mtu:
                small.append(nal)
                continue
            flush()
            small.append(nal)
            continue
        flush()
        if codec == "H264":
            indicator, kind, body = bytes([(nal[0] & 0xE0) | 28]), nal[0] & 0x1F, nal[1:]
        else:
            indicator, kind, body = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]]), (nal[0] >> 1) & 0x3F, nal[2:]
        chunks = [body[i : i + mtu] for i in range(0, len(body), mtu)]
        for i, chunk in enumerate(chunks):
            header = (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0) | kind
            out.append(indicator + bytes([header]) + chunk)
    flush()
    return out


def interleaved(packet: bytes, channel: int = 0) -> bytes:
    return b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet


def stream_bytes(
    codec: str,
    units: list[tuple[tuple[bytes, ...], bool]] | tuple[tuple[tuple[bytes, ...], bool], ...],
    *,
    seq: int = 1000,
    ts: int = 0,
    pt: int = 96,
    channel: int = 0,
    mtu: int = 1200,
) -> bytes:
    """Interleaved RTP of ``units`` in order, 90 kHz timestamps 10 fps apart."""
    out = bytearray()
    for i, (nals, _key) in enumerate(units):
        parts = payloads(codec, nals, mtu)
        for j, payload in enumerate(parts):
            out += interleaved(rtp(payload, seq=seq, ts=ts + 9000 * i, marker=j == len(parts) - 1, pt=pt), channel)
            seq += 1
    return bytes(out)
