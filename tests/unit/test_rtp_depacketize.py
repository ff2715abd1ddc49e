"""RTP parsing and H.264 / H.265 depacketisation (probes.frames.rtp) with packets built here from frames PyAV
encodes: single NAL units, STAP-A / AP, FU-A / FU, a join in the middle of a unit, a lost packet, parameter sets
from the SDP, DONL fields, random payloads, and the size cap. The rebuilt keyframes decode to the right size."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from probes.frames import decode_keyframe
from probes.frames.rtp import (
    AccessUnit,
    H264Depacketizer,
    H265Depacketizer,
    RtpPacket,
    depacketizer_for,
    parse_rtp,
)
from tests.rtp_streams import encode, nal_type, payloads, rtp, sprop

Units = Sequence[tuple[tuple[bytes, ...], bool]]


def packets_of(codec: str, units: Units, *, mtu: int = 300, seq: int = 65530) -> list[RtpPacket]:
    out = []
    for i, (nals, _key) in enumerate(units):
        parts = payloads(codec, nals, mtu)
        for j, payload in enumerate(parts):
            packet = parse_rtp(rtp(payload, seq=seq, ts=3000 * i, marker=j == len(parts) - 1))
            assert packet is not None
            out.append(packet)
            seq += 1
    return out


def feed(dep: H264Depacketizer | H265Depacketizer, packets: list[RtpPacket]) -> list[AccessUnit]:
    return [unit for packet in packets for unit in dep.push(packet)]


def test_rtp_header_fields_csrcs_extension_and_padding() -> None:
    payload = b"\x65hello"
    header = bytes([0x80 | 0x20 | 0x10 | 2, 0x80 | 96]) + (7).to_bytes(2, "big") + (90000).to_bytes(4, "big")
    header += b"\x00\x00\x00\x01" + b"csr1" + b"csr2"  # SSRC, two CSRCs
    header += b"\xbe\xde\x00\x01" + b"ext!"  # one-word extension
    packet = parse_rtp(header + payload + b"\x00\x00\x03")  # three bytes of padding
    assert packet == RtpPacket(payload_type=96, marker=True, sequence=7, timestamp=90000, payload=payload)
    assert parse_rtp(b"\x40" + header[1:] + payload) is None  # version 1
    assert parse_rtp(header[:10]) is None
    assert parse_rtp(bytes([0x8F]) + header[1:12]) is None  # 15 CSRCs announced, none there
    assert parse_rtp(bytes([0xA0]) + header[1:12] + b"\x40") is None  # padding longer than the packet


@pytest.mark.parametrize("mtu", [60, 300, 5000], ids=["fu-a", "mixed", "single+stap-a"])
def test_h264_units_are_rebuilt_exactly_and_the_keyframe_decodes(mtu: int) -> None:
    units = encode("H264", 160, 120, 12, 5)
    dep = H264Depacketizer()
    got = feed(dep, packets_of("H264", units, mtu=mtu))  # sequence numbers wrap at 65535 on the way
    assert [u.nals for u in got] == [nals for nals, _ in units]
    assert [u.keyframe for u in got] == [key for _, key in units]
    assert all(u.complete for u in got)  # the first too: it starts with a picture's first slice
    assert dep.malformed == 0
    data = dep.decodable(got[5])
    assert data is not None and data.startswith(b"\x00\x00\x00\x01")
    assert decode_keyframe("H264", data).shape == (120, 160, 3)
    assert dep.decodable(got[6]) is None  # not a keyframe


def test_joining_in_the_middle_of_a_fragmented_unit() -> None:
    units = encode("H264", 160, 120, 12, 5)
    packets = packets_of("H264", units, mtu=60)
    start = next(i for i, p in enumerate(packets) if p.payload[0] & 0x1F == 28 and not p.payload[1] & 0x80)
    got = feed(H264Depacketizer(), packets[start:])
    assert not got[0].complete and all(u.complete for u in got[1:])


def test_joining_between_two_slices_of_a_picture() -> None:
    units = encode("H264", 160, 120, 12, 5)  # two slices per picture (sliced threads)
    second_slice_on = [(units[5][0][3:], True), *units[6:]]
    assert nal_type("H264", second_slice_on[0][0][0]) == 5
    got = feed(H264Depacketizer(), packets_of("H264", second_slice_on))
    assert not got[0].complete and all(u.complete for u in got[1:])


def test_a_lost_packet_breaks_its_unit_only() -> None:
    units = encode("H264", 160, 120, 12, 5)
    packets = packets_of("H264", units, mtu=100)
    first_of = [i for i, p in enumerate(packets) if i == 0 or p.timestamp != packets[i - 1].timestamp]
    lost = first_of[5] + 2  # inside the second keyframe
    got = feed(H264Depacketizer(), packets[:lost] + packets[lost + 1 :])
    keyframes = [u for u in got if u.keyframe]
    assert [u.complete for u in keyframes] == [True, False, True]
    assert all(u.complete for u in got[6:])


def test_parameter_sets_come_from_the_sdp_when_not_in_band() -> None:
    units = encode("H264", 160, 120, 12, 5)
    stripped = [(tuple(n for n in nals if nal_type("H264", n) not in (7, 8)), key) for nals, key in units]
    bare = H264Depacketizer()
    got = feed(bare, packets_of("H264", stripped))
    assert got[5].keyframe and got[5].complete and bare.decodable(got[5]) is None  # no SPS/PPS anywhere
    fmtp = dict(item.split("=", 1) for item in sprop("H264", units).split(";"))
    primed = depacketizer_for("H264", fmtp, max_au_bytes=2**20)
    assert isinstance(primed, H264Depacketizer)
    got = feed(primed, packets_of("H264", stripped))
    data = primed.decodable(got[5])
    assert data is not None and nal_type("H264", data[4:]) == 7
    assert decode_keyframe("H264", data).shape == (120, 160, 3)


def test_h265_units_are_rebuilt_exactly_and_the_keyframe_decodes() -> None:
    units = encode("H265", 160, 128, 6, 5)
    dep = H265Depacketizer()
    got = feed(dep, packets_of("H265", units, mtu=200))
    assert [u.nals for u in got] == [nals for nals, _ in units]
    assert [u.keyframe for u in got] == [key for _, key in units]
    assert dep.malformed == 0
    data = dep.decodable(got[5])  # a CRA picture: a keyframe too
    assert data is not None
    assert decode_keyframe("H265", data).shape == (128, 160, 3)


def test_h265_donl_fields() -> None:
    vps, sps = bytes([32 << 1, 1]) + b"vps", bytes([33 << 1, 1]) + b"sps"
    idr = bytes([19 << 1, 1]) + bytes(range(40))
    ap = bytes([48 << 1, 1]) + b"\x00\x07" + len(vps).to_bytes(2, "big") + vps + b"\x01"
    ap += len(sps).to_bytes(2, "big") + sps
    fu1 = bytes([49 << 1, 1, 0x80 | 19]) + b"\x00\x09" + idr[2:20]
    fu2 = bytes([49 << 1, 1, 0x40 | 19]) + idr[20:]
    dep = H265Depacketizer(donl=True)
    units = [u for seq, p in enumerate((ap, fu1, fu2)) for u in dep.push(rtp_packet(p, seq, seq == 2))]
    assert units[0].nals == (vps, sps, idr) and units[0].keyframe and dep.malformed == 0


def rtp_packet(payload: bytes, seq: int, marker: bool) -> RtpPacket:
    packet = parse_rtp(rtp(payload, seq=seq, ts=0, marker=marker))
    assert packet is not None
    return packet


@pytest.mark.parametrize("codec", ["H264", "H265"])
def test_random_payloads_show_up_as_malformed(codec: str) -> None:
    rng = random.Random(9)
    dep = H264Depacketizer() if codec == "H264" else H265Depacketizer()
    for seq in range(200):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(20, 1400)))
        dep.push(rtp_packet(payload, seq, seq % 5 == 4))
    assert dep.malformed * 3 > dep.packets


def test_a_unit_over_the_cap_is_not_kept() -> None:
    units = encode("H264", 160, 120, 12, 5)
    dep = H264Depacketizer(max_au_bytes=200)
    got = feed(dep, packets_of("H264", units, mtu=60))
    assert got[5].keyframe and not got[5].complete and got[5].size <= 200
    assert dep.decodable(got[5]) is None


def test_codecs_we_do_not_depacketise() -> None:
    assert depacketizer_for("JPEG", {}, max_au_bytes=1) is None
    assert depacketizer_for("H264", {"packetization-mode": "2"}, max_au_bytes=1) is None
    assert isinstance(depacketizer_for("hevc", {}, max_au_bytes=1), H265Depacketizer)


def _raw(packet: RtpPacket) -> bytes:
    return rtp(packet.payload, seq=packet.sequence, ts=packet.timestamp, marker=packet.marker, pt=packet.payload_type)


@pytest.mark.parametrize(
    ("mtu", "cap", "lose"), [(60, 2**20, None), (300, 2**20, 40), (60, 200, None), (100, 2**20, 7)],
    ids=["fu-a", "lost-packet", "over-cap", "lost-early"],
)
def test_the_fragment_fast_path_does_what_push_does(mtu: int, cap: int, lose: int | None) -> None:
    """continue_fragment (the sampler's shortcut for middle FU-A fragments) leaves the depacketiser exactly as
    push(parse_rtp(...)) does: the same units, counters and state, across a sequence wrap, a lost packet and the cap;
    other packets (and another payload type) it leaves alone."""
    packets = packets_of("H264", encode("H264", 160, 120, 12, 5), mtu=mtu)
    if lose is not None:
        del packets[lose]
    slow, fast = H264Depacketizer(max_au_bytes=cap), H264Depacketizer(max_au_bytes=cap)
    slow_units, fast_units, taken = feed(slow, packets), [], 0
    for packet in packets:
        data = b"$\x00\x00\x00" + _raw(packet)  # at an offset, as in the interleaved read buffer
        assert not fast.continue_fragment(bytearray(data), 4, len(data), 97)
        if fast.continue_fragment(bytearray(data), 4, len(data), 96):
            taken += 1
            continue
        parsed = parse_rtp(data[4:])
        assert parsed is not None
        fast_units.extend(fast.push(parsed))
    assert taken > 0
    assert fast_units == slow_units
    assert (fast.packets, fast.malformed, fast._last_seq, fast._broken) == (
        slow.packets, slow.malformed, slow._last_seq, slow._broken)
    assert not H265Depacketizer().continue_fragment(b"\x80" * 40, 0, 40, None)
