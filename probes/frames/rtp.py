"""RTP (RFC 3550) packets and H.264 (RFC 6184) / H.265 (RFC 7798) depacketisation into Annex-B access units.

Pure and bounded: a depacketiser holds at most one access unit of at most ``max_au_bytes`` and a few parameter
sets. Access units end at the RTP marker bit or at a timestamp change. An access unit is ``complete`` when no
packet of it was lost (sequence numbers), every fragmented NAL unit had its start and end, and, for the unit
the session joined, its first slice starts the picture (a camera that starts PLAY at a keyframe gives it whole;
one joined between slices does not). Packets a real encoder never sends (forbidden bit set, reserved or
interleaved-mode types, aggregation packets that overrun) are counted in ``malformed``: a stream of random bytes
shows up there instead of decoding as noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from probes.media.sdp import sprop_bytes

__all__ = [
    "AccessUnit",
    "Depacketizer",
    "H264Depacketizer",
    "H265Depacketizer",
    "RtpPacket",
    "depacketizer_for",
    "parse_rtp",
]

START_CODE: Final = b"\x00\x00\x00\x01"
_MAX_PARAM_SET_BYTES: Final = 4096  # an SPS/PPS/VPS is tens of bytes; larger is not one
_MAX_PARAM_SETS_PER_TYPE: Final = 4
_NOT_FRAGMENTED: Final = frozenset({0, 24, 25, 26, 27, 28, 29, 30, 31})  # H.264 types no FU-A may carry


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP packet in ``data``; None when it is not one (version, short, CSRC/extension/padding overrun)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0 = data[0]
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if b0 & 0x20:  # padding: the last byte counts the padding bytes
        end -= data[-1]
    if offset > end:
        return None
    b1 = data[1]
    return RtpPacket(
        payload_type=b1 & 0x7F,
        marker=bool(b1 & 0x80),
        sequence=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        payload=data[offset:end],
    )


@dataclass(frozen=True, slots=True)
class AccessUnit:
    timestamp: int
    nals: tuple[bytes, ...]  # NAL units without start codes, in decoding order
    keyframe: bool  # holds an IDR (H.264) / IRAP (H.265) picture
    complete: bool
    size: int  # payload bytes of its NAL units

    def annexb(self) -> bytes:
        return START_CODE + START_CODE.join(self.nals) if self.nals else b""


class Depacketizer:
    """Feed RTP packets of one video track in arrival order (:meth:`push`); finished access units come back."""

    codec: ClassVar[str] = ""
    keyframe_types: ClassVar[frozenset[int]] = frozenset()
    param_types: ClassVar[tuple[int, ...]] = ()  # needed before a keyframe, in this order

    def __init__(self, *, max_au_bytes: int = 16 * 2**20) -> None:
        self.max_au_bytes = max_au_bytes
        self.packets = 0
        self.malformed = 0
        self.params: dict[int, dict[bytes, None]] = {}  # NAL type -> the distinct sets seen (latest few)
        self._ts: int | None = None
        self._nals: list[bytes] = []
        self._size = 0
        self._key = False
        self._broken = False
        self._joined = True  # the unit the session joined: whole only if it starts with a picture's first slice
        self._vcl: bool | None = None  # its first slice starts a picture (None: no slice yet)
        self._fu: list[bytes] | None = None  # fragments of the NAL unit being reassembled
        self._fu_size = 0
        self._last_seq: int | None = None

    # --- what subclasses implement -----------------------------------------------------------------------------

    def _nal_type(self, nal: bytes) -> int:
        raise NotImplementedError

    def _first_slice(self, nal: bytes) -> bool | None:
        """None for a NAL unit that is no slice; else whether it is the first slice of its picture."""
        raise NotImplementedError

    def _payload(self, payload: bytes) -> None:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------------------

    def push(self, packet: RtpPacket) -> tuple[AccessUnit, ...]:
        self.packets += 1
        done: tuple[AccessUnit, ...] = ()
        if self._ts is not None and packet.timestamp != self._ts:
            done = (self._finish(boundary=True),)
        if self._last_seq is not None and packet.sequence != (self._last_seq + 1) & 0xFFFF:
            self._broken = True  # a packet was lost: the unit it belonged to cannot be trusted
            self._fu = None
        self._last_seq = packet.sequence
        self._ts = packet.timestamp
        if packet.payload:
            self._payload(packet.payload)
        else:
            self.malformed += 1
        if packet.marker:
            done = (*done, self._finish(boundary=True))
        return done

    def _finish(self, *, boundary: bool) -> AccessUnit:
        unit = AccessUnit(
            timestamp=self._ts or 0,
            nals=tuple(self._nals),
            keyframe=self._key,
            complete=not self._broken and self._fu is None and (not self._joined or bool(self._vcl)),
            size=self._size,
        )
        self._ts = None
        self._nals = []
        self._size = 0
        self._key = False
        self._fu = None
        self._broken = not boundary
        self._joined = not boundary
        self._vcl = None
        return unit

    def _add(self, nal: bytes) -> None:
        if not nal:
            self.malformed += 1
            return
        kind = self._nal_type(nal)
        if self._vcl is None:
            self._vcl = self._first_slice(nal)
        if kind in self.keyframe_types:
            self._key = True
        elif kind in self.param_types and len(nal) <= _MAX_PARAM_SET_BYTES:
            self.remember(kind, nal)
        if self._size + len(nal) > self.max_au_bytes:
            self._broken = True  # over the cap: kept no further (the sampler reports the size)
            return
        self._nals.append(nal)
        self._size += len(nal)

    def _add_aggregated(self, payload: bytes, pos: int, *, min_size: int, dond: bool) -> None:
        """The NAL units of an aggregation packet (H.264 STAP-A, H.265 AP) from pos on: (16-bit size, NAL unit)*,
        a one-byte DOND before each unit after the first when dond; malformed unless the sizes fill it exactly."""
        end = len(payload)
        nals: list[bytes] = []
        while pos < end:
            if nals and dond:
                pos += 1
            if pos + 2 > end:
                break
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size < min_size or pos + size > end:
                break
            nals.append(payload[pos : pos + size])
            pos += size
        if pos != end or not nals:
            self.malformed += 1
            return
        for nal in nals:
            self._add(nal)

    def remember(self, kind: int, nal: bytes) -> None:
        seen = self.params.setdefault(kind, {})
        seen.pop(nal, None)
        seen[nal] = None
        while len(seen) > _MAX_PARAM_SETS_PER_TYPE:
            del seen[next(iter(seen))]

    def _fragment(self, start: bool, end: bool, header: bytes, data: bytes) -> None:
        if start:
            if self._fu is not None:
                self._broken = True  # the previous fragmented unit never ended
            self._fu = [header, data]
            self._fu_size = len(data)
            if self._nal_type(header) in self.keyframe_types:
                self._key = True  # known from the first fragment, even when the whole turns out over the cap
        elif self._fu is None:
            self._broken = True  # joined mid-unit, or its start was lost
            return
        else:
            self._fu.append(data)
            self._fu_size += len(data)
            if self._fu_size > self.max_au_bytes:
                self._fu = None
                self._broken = True
                return
        if end:
            nal = b"".join(self._fu)
            self._fu = None
            self._add(nal)

    def continue_fragment(self, data: bytes | bytearray, start: int, end: int, payload_type: int | None) -> bool:
        """Most packets of a large picture in one step: when ``data[start:end]`` is a plain RTP packet (no CSRC,
        extension or padding, no marker) of ``payload_type`` (any when None) with the next middle fragment of the NAL
        unit being reassembled (same timestamp, next sequence number), take it and return True, exactly as
        ``push(parse_rtp(data[start:end]))`` would, without building the packet. False: nothing was done."""
        return False

    def decodable(self, unit: AccessUnit) -> bytes | None:
        """Annex-B bytes of a complete keyframe unit with the parameter sets it needs (from the unit itself, from
        earlier units or from the SDP), or None when it is not one or a parameter set is missing."""
        if not unit.keyframe or not unit.complete or not unit.nals:
            return None
        present = {self._nal_type(nal) for nal in unit.nals}
        missing = [kind for kind in self.param_types if kind not in present]
        if any(not self.params.get(kind) for kind in missing):
            return None
        prefix = [nal for kind in missing for nal in self.params[kind]]
        return START_CODE + START_CODE.join((*prefix, *unit.nals))

    def add_parameter_sets(self, nals: Iterable[bytes]) -> None:
        """Parameter sets from the SDP (sprop-*): known before the first packet."""
        for nal in nals:
            if nal and len(nal) <= _MAX_PARAM_SET_BYTES:
                kind = self._nal_type(nal)
                if kind in self.param_types:
                    self.remember(kind, nal)


class H264Depacketizer(Depacketizer):
    """RFC 6184 packetization modes 0 and 1: single NAL unit, STAP-A, FU-A."""

    codec = "H264"
    keyframe_types = frozenset({5})
    param_types = (7, 8)

    def _nal_type(self, nal: bytes) -> int:
        return nal[0] & 0x1F

    def _first_slice(self, nal: bytes) -> bool | None:
        if not 1 <= nal[0] & 0x1F <= 5:
            return None
        return len(nal) > 1 and bool(nal[1] & 0x80)  # first_mb_in_slice ue(v) == 0 is the single bit "1"

    def continue_fragment(self, data: bytes | bytearray, start: int, end: int, payload_type: int | None) -> bool:
        fu = self._fu
        if fu is None or end - start < 15 or data[start] != 0x80:  # V=2, no padding, extension or CSRC
            return False
        b1 = data[start + 1]  # marker, payload type
        if b1 & 0x80 or (payload_type is not None and b1 != payload_type):
            return False
        seq = (data[start + 2] << 8) | data[start + 3]
        if self._last_seq is None or seq != (self._last_seq + 1) & 0xFFFF:
            return False
        if int.from_bytes(data[start + 4 : start + 8], "big") != self._ts:
            return False
        # FU-A (forbidden bit clear), neither start nor end nor reserved bit, a type a fragment may have
        if data[start + 12] & 0x9F != 28 or data[start + 13] & 0xE0 or data[start + 13] & 0x1F in _NOT_FRAGMENTED:
            return False
        piece = bytes(data[start + 14 : end])
        self.packets += 1
        self._last_seq = seq
        fu.append(piece)
        self._fu_size += len(piece)
        if self._fu_size > self.max_au_bytes:
            self._fu = None
            self._broken = True
        return True

    def _payload(self, payload: bytes) -> None:
        head = payload[0]
        kind = head & 0x1F
        if head & 0x80 or kind in (0, 25, 26, 27, 29, 30, 31):  # forbidden bit; reserved; STAP-B/MTAP/FU-B
            self.malformed += 1
        elif kind < 24:
            self._add(payload)
        elif kind == 24:  # STAP-A: (16-bit size, NAL unit)*
            self._add_aggregated(payload, 1, min_size=1, dond=False)
        else:  # 28, FU-A: indicator, header (S E R type), fragment
            if len(payload) < 3:
                self.malformed += 1
                return
            fu = payload[1]
            start, end_bit = bool(fu & 0x80), bool(fu & 0x40)
            if fu & 0x20 or (start and end_bit) or (fu & 0x1F) in _NOT_FRAGMENTED:
                self.malformed += 1
                return
            self._fragment(start, end_bit, bytes(((head & 0xE0) | (fu & 0x1F),)), payload[2:])


class H265Depacketizer(Depacketizer):
    """RFC 7798: single NAL unit, aggregation (AP) and fragmentation (FU) packets; DONL fields when the SDP's
    sprop-max-don-diff says they are present."""

    codec = "H265"
    keyframe_types = frozenset(range(16, 22))  # BLA, IDR, CRA
    param_types = (32, 33, 34)  # VPS, SPS, PPS

    def __init__(self, *, max_au_bytes: int = 16 * 2**20, donl: bool = False) -> None:
        super().__init__(max_au_bytes=max_au_bytes)
        self.donl = donl

    def _nal_type(self, nal: bytes) -> int:
        return (nal[0] >> 1) & 0x3F

    def _first_slice(self, nal: bytes) -> bool | None:
        if (nal[0] >> 1) & 0x3F > 31:
            return None
        return len(nal) > 2 and bool(nal[2] & 0x80)  # first_slice_segment_in_pic_flag

    def _payload(self, payload: bytes) -> None:
        if len(payload) < 3:
            self.malformed += 1
            return
        b0, b1 = payload[0], payload[1]
        kind = (b0 >> 1) & 0x3F
        if b0 & 0x80 or b1 & 0x07 == 0 or 41 <= kind <= 47 or kind > 50:  # forbidden; TID 0; reserved
            self.malformed += 1
        elif kind < 41:
            self._add(payload)
        elif kind == 48:  # AP: [DONL] (16-bit size, NAL unit) ([DOND] size, NAL unit)*
            self._add_aggregated(payload, 2 + (2 if self.donl else 0), min_size=2, dond=self.donl)
        elif kind == 49:  # FU: payload header, FU header (S E type), [DONL in the first], fragment
            fu = payload[2]
            start, end_bit, fu_type = bool(fu & 0x80), bool(fu & 0x40), fu & 0x3F
            if (start and end_bit) or fu_type in (48, 49, 50):
                self.malformed += 1
                return
            data = payload[3 + (2 if self.donl and start else 0) :]
            header = bytes(((b0 & 0x81) | (fu_type << 1), b1))
            self._fragment(start, end_bit, header, data)
        # 50 (PACI) carries no picture we need: skipped


def depacketizer_for(codec: str, fmtp: Mapping[str, str], *, max_au_bytes: int) -> Depacketizer | None:
    """The depacketiser of an SDP video track (``codec`` its rtpmap name), primed with the sprop-* parameter
    sets; None for a codec we do not decode."""
    name = codec.upper()
    dep: Depacketizer
    if name == "H264":
        if fmtp.get("packetization-mode", "0").strip() == "2":
            return None  # interleaved mode (STAP-B, MTAP, FU-B): no camera sends it
        dep = H264Depacketizer(max_au_bytes=max_au_bytes)
        sets = fmtp.get("sprop-parameter-sets", "").split(",")
    elif name in ("H265", "HEVC"):
        don = fmtp.get("sprop-max-don-diff", "0").strip()
        dep = H265Depacketizer(max_au_bytes=max_au_bytes, donl=don.isdigit() and int(don[:6]) > 0)
        sets = [fmtp.get(key, "") for key in ("sprop-vps", "sprop-sps", "sprop-pps")]
        sets = [item for value in sets for item in value.split(",")]
    else:
        return None
    dep.add_parameter_sets(nal for nal in map(sprop_bytes, sets) if nal)
    return dep
