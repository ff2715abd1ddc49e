"""SDP (RFC 8866) as cameras send it in a DESCRIBE reply: the media tracks, their codec and the video resolution.

Codec: the rtpmap encoding name of a track's first payload type (or the static RTP payload type's name, RFC 3551).
Resolution, in this order: ``a=framesize:<pt> W-H`` (Live555, Sony, Panasonic), ``a=x-dimensions:W,H``
(Hikvision, Uniview), ``a=cliprect:T,L,B,R`` (QuickTime/Darwin descendants); else decoded from the sequence
parameter set the SDP carries: ``sprop-parameter-sets`` for H.264 (RFC 6184), ``sprop-sps`` for H.265 (RFC 7798).
Pure and bounded: a hostile SDP costs at most its (capped) length.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["SdpMedia", "SdpSession", "h264_sps_size", "h265_sps_size", "parse_sdp", "sprop_bytes"]

_MAX_LINES: Final = 2048
_MAX_DIMENSION: Final = 16_384  # larger is a misread, not a camera

# RFC 3551 static payload types cameras use (video 26 = Motion JPEG over RTP, RFC 2435).
# fmt: off
_STATIC: Final[Mapping[int, str]] = {
    0: "PCMU", 3: "GSM", 4: "G723", 5: "DVI4", 6: "DVI4", 7: "LPC", 8: "PCMA", 9: "G722", 10: "L16", 11: "L16",
    12: "QCELP", 13: "CN", 14: "MPA", 15: "G728", 16: "DVI4", 17: "DVI4", 18: "G729", 25: "CelB", 26: "JPEG",
    28: "nv", 31: "H261", 32: "MPV", 33: "MP2T", 34: "H263",
}
# fmt: on


@dataclass(frozen=True, slots=True)
class SdpMedia:
    kind: str  # "video", "audio", "application" (ONVIF metadata), ...
    codec: str | None  # rtpmap encoding name, upper case: "H264", "H265", "JPEG", "PCMA", "VND.ONVIF.METADATA"
    payload: int | None
    clock_rate: int | None
    width: int | None = None
    height: int | None = None
    control: str | None = None
    fmtp: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SdpSession:
    media: tuple[SdpMedia, ...]
    name: str | None = None  # s=

    @property
    def video(self) -> SdpMedia | None:
        """The first video track."""
        return next((m for m in self.media if m.kind == "video"), None)


@dataclass
class _Draft:
    kind: str
    payloads: list[int]
    rtpmap: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    fmtp: dict[int, dict[str, str]] = field(default_factory=dict)
    framesize: dict[int, tuple[int, int]] = field(default_factory=dict)
    dimensions: tuple[int, int] | None = None
    cliprect: tuple[int, int] | None = None
    control: str | None = None


def parse_sdp(text: str) -> SdpSession:
    """The tracks of an SDP. Raises ValueError when ``text`` is not an SDP (no ``v=0`` or no ``m=`` line)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if len(lines) > _MAX_LINES:
        raise ValueError(f"SDP of more than {_MAX_LINES} lines")
    lines = [line.strip() for line in lines if line.strip()]
    if not lines or lines[0].replace(" ", "") != "v=0":
        raise ValueError("not an SDP (no v=0 first)")
    name: str | None = None
    drafts: list[_Draft] = []
    for line in lines[1:]:
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            continue  # tolerated: cameras write stray lines
        if kind == "s" and not drafts:
            name = value.strip() or None
        elif kind == "m":
            parts = value.split()
            payloads = [int(p) for p in parts[3:] if p.isdigit() and len(p) <= 3]
            drafts.append(_Draft(parts[0].lower() if parts else "", payloads))
        elif kind == "a" and drafts:
            _attribute(drafts[-1], value)
    if not drafts:
        raise ValueError("SDP without a media (m=) line")
    return SdpSession(tuple(_finish(d) for d in drafts), name)


def _attribute(draft: _Draft, value: str) -> None:
    attr, _, rest = value.partition(":")
    attr = attr.strip().lower()
    rest = rest.strip()
    if attr in ("rtpmap", "fmtp", "framesize"):
        pt_text, _, spec = rest.partition(" ")
        if not pt_text.isdigit() or len(pt_text) > 3:
            return
        pt = int(pt_text)
        spec = spec.strip()
        if attr == "rtpmap":
            encoding, _, clock = spec.partition("/")
            rate = clock.partition("/")[0]
            draft.rtpmap[pt] = (encoding.strip().upper(), int(rate) if rate.isdigit() and len(rate) < 10 else None)
        elif attr == "fmtp":
            params: dict[str, str] = {}
            for item in spec.split(";"):
                key, _, val = item.partition("=")
                if key.strip():
                    params[key.strip().lower()] = val.strip()
            draft.fmtp[pt] = params
        else:
            size = _pair(spec, "-")
            if size is not None:
                draft.framesize[pt] = size
    elif attr == "x-dimensions":
        draft.dimensions = _pair(rest, ",")
    elif attr == "cliprect":
        numbers = [p.strip() for p in rest.split(",")]
        if len(numbers) == 4 and all(n.isdigit() and len(n) < 7 for n in numbers):
            top, left, bottom, right = (int(n) for n in numbers)
            draft.cliprect = _valid(right - left, bottom - top)
    elif attr == "control":
        draft.control = rest[:512] or None


def _pair(text: str, sep: str) -> tuple[int, int] | None:
    first, _, second = text.partition(sep)
    first, second = first.strip(), second.strip()
    if not (first.isdigit() and second.isdigit() and len(first) < 7 and len(second) < 7):
        return None
    return _valid(int(first), int(second))


def _valid(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if 0 < width <= _MAX_DIMENSION and 0 < height <= _MAX_DIMENSION else None


def _finish(draft: _Draft) -> SdpMedia:
    pt = draft.payloads[0] if draft.payloads else None
    codec: str | None = None
    clock: int | None = None
    if pt is not None:
        if pt in draft.rtpmap:
            codec, clock = draft.rtpmap[pt]
        elif pt in _STATIC:
            codec = _STATIC[pt].upper()
    fmtp = draft.fmtp.get(pt, {}) if pt is not None else {}
    size: tuple[int, int] | None = None
    if draft.kind == "video":
        size = (draft.framesize.get(pt) if pt is not None else None) or draft.dimensions or draft.cliprect
        if size is None:
            size = _size_from_sps(codec, fmtp)
    return SdpMedia(
        kind=draft.kind,
        codec=codec or None,
        payload=pt,
        clock_rate=clock,
        width=size[0] if size else None,
        height=size[1] if size else None,
        control=draft.control,
        fmtp=fmtp,
    )


def sprop_bytes(text: str) -> bytes | None:
    """A base64 sprop-* value (padding optional), or None when empty or not base64."""
    text = text.strip()
    if not text:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None


def _size_from_sps(codec: str | None, fmtp: Mapping[str, str]) -> tuple[int, int] | None:
    try:
        if codec == "H264":
            for item in fmtp.get("sprop-parameter-sets", "").split(","):
                nal = sprop_bytes(item)
                if nal and nal[0] & 0x1F == 7:
                    return h264_sps_size(nal)
        elif codec in ("H265", "HEVC"):
            nal = sprop_bytes(fmtp.get("sprop-sps", "").split(",")[0])
            if nal and (nal[0] >> 1) & 0x3F == 33:
                return h265_sps_size(nal)
    except ValueError:
        return None  # a truncated or corrupt SPS: resolution unknown, not a failed stage
    return None


# --- sequence parameter sets -----------------------------------------------------------------------------------


def _rbsp(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            index = self.pos >> 3
            if index >= len(self.data):
                raise ValueError("SPS truncated")
            value = (value << 1) | ((self.data[index] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data) * 8:
            raise ValueError("SPS truncated")
        self.pos += n

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_H264_HIGH: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_sps_size(nal: bytes) -> tuple[int, int] | None:
    """(width, height) of an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1), cropping applied. Raises ValueError
    when truncated or corrupt."""
    bits = _Bits(_rbsp(nal[1:]))
    profile = bits.u(8)
    bits.skip(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma = 1
    separate = 0
    if profile in _H264_HIGH:
        chroma = bits.ue()
        if chroma == 3:
            separate = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.skip(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
        if cycle > 255:
            raise ValueError("bad SPS")
        for _ in range(cycle):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.skip(1)  # mb_adaptive_frame_field_flag
    bits.skip(1)  # direct_8x8_inference_flag
    crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
    chroma_array = 0 if separate else chroma
    sub_w, sub_h = {1: (2, 2), 2: (2, 1), 3: (1, 1)}.get(chroma_array, (1, 1))
    unit_x = 1 if chroma_array == 0 else sub_w
    unit_y = (2 - frame_mbs_only) * (1 if chroma_array == 0 else sub_h)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    return _valid(width, height)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def h265_sps_size(nal: bytes) -> tuple[int, int] | None:
    """(width, height) of an H.265 SPS NAL unit (ITU-T H.265 7.3.2.2), conformance window applied. Raises
    ValueError when truncated or corrupt."""
    bits = _Bits(_rbsp(nal[2:]))
    bits.skip(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)  # sps_max_sub_layers_minus1
    bits.skip(1)  # sps_temporal_id_nesting_flag
    bits.skip(96)  # general profile_tier_level: 2+1+5+32+4+43+1 bits, general_level_idc 8
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers > 0:
        bits.skip(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            bits.skip(88)
        if level_present:
            bits.skip(8)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()
    separate = bits.u(1) if chroma == 3 else 0
    width = bits.ue()
    height = bits.ue()
    if bits.u(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        chroma_array = 0 if separate else chroma
        sub_w, sub_h = {1: (2, 2), 2: (2, 1)}.get(chroma_array, (1, 1))
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return _valid(width, height)
