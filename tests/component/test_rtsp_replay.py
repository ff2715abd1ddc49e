"""The pre-encoded RTSP replay server (probes/sim/rtsp_replay.py) on real local sockets: DESCRIBE through the project's
own client (probes.media.rtsp_describe) sees H.264 1920x1080; a raw RTSP client over TCP interleaved receives RTP
that starts with SPS, PPS and an IDR which PyAV decodes to a 1080p picture, paced at the clip's fps; a UDP transport
gets 461; TEARDOWN stops the RTP; Digest authentication; the fault modes (silent, garbage, busy, slow, a session cap);
and the spawned child process the benchmarks use. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import pytest
import pytest_asyncio

from probes.media import MediaFailure, RtspInfo, rtsp_describe
from probes.media.causes import MediaCause
from probes.media.sdp import h264_sps_size, parse_sdp
from probes.policy import AddressPolicy
from probes.sim.rtsp_replay import Clip, ClipSpec, ReplayServer, rtp_payloads, split_annexb, start_replay_process

VIDEO = Path(__file__).resolve().parents[1] / "data" / "video" / "pedestrians_480x360_8s.mp4"
SPEC = ClipSpec(seconds=1.0, gop_s=0.5, source=str(VIDEO))  # 1920x1080, 10 fps, 10 frames: 2 keyframes
HOSTS = ("127.72.0.1", "127.72.0.2", "127.72.0.3")
POLICY = AddressPolicy.build()
USER, PASSWORD = "admin", "Replay-Secret-9"


@pytest.fixture(scope="module")
def clip() -> Clip:
    return Clip.load(SPEC)  # encoded once per parameter set, cached under VMS_SIM_CACHE or <tmp>


@pytest_asyncio.fixture
async def server(clip: Clip) -> AsyncIterator[ReplayServer]:
    srv = ReplayServer(clip, hosts=HOSTS, faults={"/cam7": "silent", "/cam8": "garbage", "/cam9": "busy",
                                                  HOSTS[2]: "slow"}, slow_delay_s=0.5, max_sessions=2)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def describe(url: str, device_ip: str, timeout: float = 3.0, **cred: str | None) -> RtspInfo | MediaFailure:
    return await asyncio.wait_for(
        rtsp_describe(url, username=cred.get("user"), password=cred.get("password"), timeout=timeout,
                      policy=POLICY, device_ip=device_ip),
        timeout + 5,
    )


class RawClient:
    """A minimal RTSP client over one TCP connection: requests, replies, and interleaved packets in between."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str) -> None:
        self.reader, self.writer, self.url = reader, writer, url
        self.cseq = 0
        self.packets: list[tuple[int, bytes]] = []  # (channel, RTP packet) seen while waiting for replies

    @classmethod
    async def open(cls, url: str) -> RawClient:
        host, port = re.match(r"rtsp://([\d.]+):(\d+)", url).groups()  # type: ignore[union-attr]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        return cls(reader, writer, url)

    def close(self) -> None:
        self.writer.close()

    async def request(self, method: str, uri: str | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {uri or self.url} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await asyncio.wait_for(self._reply(), 5)

    async def _reply(self) -> tuple[int, dict[str, str], bytes]:
        while True:
            first = await self.reader.readexactly(1)
            if first == b"$":
                self.packets.append(await self._packet())
                continue
            head = (first + await self.reader.readuntil(b"\r\n\r\n")).decode()
            lines = head.split("\r\n")
            hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ":" in ln)}
            body = await self.reader.readexactly(int(hdrs.get("content-length", "0")))
            return int(lines[0].split()[1]), hdrs, body

    async def _packet(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(3)
        return head[0], await self.reader.readexactly(int.from_bytes(head[1:3], "big"))

    async def next_packet(self, timeout: float) -> tuple[int, bytes] | None:
        if self.packets:
            return self.packets.pop(0)
        try:
            first = await asyncio.wait_for(self.reader.readexactly(1), timeout)
        except TimeoutError:
            return None
        assert first == b"$", f"expected an interleaved packet, got {first!r}"
        return await asyncio.wait_for(self._packet(), 5)

    async def play(self) -> int:
        status, _, _ = await self.request("DESCRIBE", Accept="application/sdp")
        if status != 200:
            return status
        status, hdrs, _ = await self.request("SETUP", self.url + "/trackID=1",
                                             Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        if status != 200:
            return status
        self.session = hdrs["session"].split(";")[0]
        status, _, _ = await self.request("PLAY", Session=self.session, Range="npt=0.000-")
        return status


def depacketise(payloads: list[bytes]) -> list[bytes]:
    """RFC 6184 single NAL units and FU-A back to NAL units (what the tests need, nothing more)."""
    nals: list[bytes] = []
    fu = bytearray()
    for p in payloads:
        kind = p[0] & 0x1F
        if kind == 28:
            if p[1] & 0x80:
                fu = bytearray([(p[0] & 0xE0) | (p[1] & 0x1F)])
            fu += p[2:]
            if p[1] & 0x40:
                nals.append(bytes(fu))
        else:
            nals.append(p)
    return nals


async def read_access_unit(client: RawClient, timeout: float = 5.0) -> tuple[list[bytes], int]:
    """RTP payloads up to the first marker bit; returns (payloads, RTP timestamp)."""
    payloads: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await client.next_packet(deadline - time.monotonic())
        assert got is not None, "no RTP within the time"
        channel, rtp = got
        assert channel == 0 and rtp[0] >> 6 == 2 and rtp[1] & 0x7F == 96
        payloads.append(rtp[12:])
        if rtp[1] & 0x80:
            return payloads, int.from_bytes(rtp[4:8], "big")
    raise AssertionError("no complete access unit in time")


# --- the clip -------------------------------------------------------------------------------------------------------


def test_fu_a_fragments_and_reassembles() -> None:
    nal = bytes([0x65]) + bytes(range(256)) * 20
    payloads = rtp_payloads([bytes([0x67, 1, 2]), nal], max_payload=1000)
    assert payloads[0] == bytes([0x67, 1, 2]) and all(len(p) <= 1000 for p in payloads)
    assert payloads[1][0] & 0x1F == 28 and payloads[1][1] == 0x80 | 5 and payloads[-1][1] == 0x40 | 5
    assert depacketise(payloads) == [bytes([0x67, 1, 2]), nal]
    assert split_annexb(b"\x00\x00\x00\x01\x67\x01\x00\x00\x01\x68\x02") == [b"\x67\x01", b"\x68\x02"]


def test_clip_is_cached_and_starts_with_a_keyframe(clip: Clip) -> None:
    assert (clip.width, clip.height, clip.fps, len(clip.frames)) == (1920, 1080, 10, 10)
    assert clip.keyframes == (0, 5) and h264_sps_size(clip.sps) == (1920, 1080)
    t0 = time.perf_counter()
    again = Clip.load(SPEC)  # from the cache: no encoding
    assert time.perf_counter() - t0 < 30 and again.sps == clip.sps and len(again.frames) == len(clip.frames)


# --- the server -----------------------------------------------------------------------------------------------------


async def test_describe_gives_h264_1080p(server: ReplayServer) -> None:
    info = await describe(server.url(HOSTS[1], "/cam3"), HOSTS[1])
    assert info == RtspInfo("H264", 1920, 1080, ("video/H264",), "vms-replay/1")
    client = await RawClient.open(server.url(HOSTS[0], "/cam3"))
    try:
        status, hdrs, body = await client.request("DESCRIBE", Accept="application/sdp")
        assert status == 200 and hdrs["content-base"].endswith("/cam3/")
        video = parse_sdp(body.decode()).video
        assert video is not None and video.codec == "H264" and (video.width, video.height) == (1920, 1080)
        assert video.fmtp["packetization-mode"] == "1"
        sps = base64.b64decode(video.fmtp["sprop-parameter-sets"].split(",")[0])
        assert h264_sps_size(sps) == (1920, 1080)
        assert (await client.request("DESCRIBE", server.url(HOSTS[0], "/nope")))[0] == 404
    finally:
        client.close()


async def test_play_sends_sps_pps_idr_at_once_then_paces(server: ReplayServer) -> None:
    client = await RawClient.open(server.url(HOSTS[0], "/cam1"))
    try:
        t0 = time.monotonic()
        assert await client.play() == 200
        payloads, ts0 = await read_access_unit(client)
        first_au_s = time.monotonic() - t0
        nals = depacketise(payloads)
        assert [n[0] & 0x1F for n in nals][:3] == [7, 8, 5]
        codec = av.CodecContext.create("h264", "r")
        pictures = codec.decode(av.Packet(b"".join(b"\x00\x00\x00\x01" + n for n in nals)))
        pictures += codec.decode(None)
        assert pictures and (pictures[0].width, pictures[0].height) == (1920, 1080)
        # Paced at 10 fps: about 5 more frames in 0.5 s, not the whole clip at once.
        frames = 0
        timestamps = [ts0]
        t1 = time.monotonic()
        while time.monotonic() - t1 < 0.5:
            _, ts = await read_access_unit(client)
            timestamps.append(ts)
            frames += 1
        assert frames <= 10, f"{frames} frames in 0.5 s at 10 fps"
        assert all(b - a == 9000 for a, b in itertools.pairwise(timestamps))
        assert first_au_s < 5
        # The client's RTCP receiver report, interleaved on channel 1, is read and dropped by the server.
        rr = bytes([0x80, 201, 0, 1]) + (1234).to_bytes(4, "big")
        client.writer.write(b"$\x01" + len(rr).to_bytes(2, "big") + rr)
        # TEARDOWN: what was in flight arrives before the reply; nothing after it.
        status, _, _ = await client.request("TEARDOWN", Session=client.session)
        assert status == 200
        assert await client.next_packet(0.4) is None
    finally:
        client.close()


async def test_udp_transport_is_refused_with_461(server: ReplayServer) -> None:
    client = await RawClient.open(server.url(HOSTS[0], "/cam2"))
    try:
        await client.request("DESCRIBE")
        status, _, _ = await client.request("SETUP", client.url + "/trackID=1",
                                            Transport="RTP/AVP;unicast;client_port=5000-5001")
        assert status == 461
        status, _, _ = await client.request("PLAY", Session="nope")
        assert status == 454
    finally:
        client.close()


async def test_digest_auth(clip: Clip) -> None:
    async with ReplayServer(clip, hosts=("127.72.0.10",), username=USER, password=PASSWORD) as srv:
        url = srv.url(path="/cam0")
        none = await describe(url, "127.72.0.10")
        wrong = await describe(url, "127.72.0.10", user=USER, password="wrong")
        right = await describe(url, "127.72.0.10", user=USER, password=PASSWORD)
        assert isinstance(none, MediaFailure) and none.cause == MediaCause.RTSP_AUTH
        assert isinstance(wrong, MediaFailure) and wrong.cause == MediaCause.RTSP_AUTH
        assert isinstance(right, RtspInfo) and (right.width, right.height) == (1920, 1080)
        # A raw client without credentials cannot set up or play either.
        client = await RawClient.open(url)
        try:
            status, hdrs, _ = await client.request("DESCRIBE")
            assert status == 401 and hdrs["www-authenticate"].startswith("Digest ")
            status, _, _ = await client.request("SETUP", url + "/trackID=1", Transport="RTP/AVP/TCP;interleaved=0-1")
            assert status == 401
        finally:
            client.close()


async def test_fault_silent_answers_play_and_sends_nothing(server: ReplayServer) -> None:
    client = await RawClient.open(server.url(HOSTS[0], "/cam7"))
    try:
        assert await client.play() == 200
        assert await client.next_packet(0.5) is None
    finally:
        client.close()


async def test_fault_garbage_sends_undecodable_rtp(server: ReplayServer) -> None:
    client = await RawClient.open(server.url(HOSTS[0], "/cam8"))
    try:
        assert await client.play() == 200
        codec = av.CodecContext.create("h264", "r")
        pictures = []
        for _ in range(3):
            payloads, _ = await read_access_unit(client)
            assert len(payloads) == 3 and all(len(p) == 1400 for p in payloads)
            data = b"".join(b"\x00\x00\x00\x01" + p for p in payloads)
            with contextlib.suppress(av.FFmpegError):
                pictures += codec.decode(av.Packet(data))
        assert not pictures
    finally:
        client.close()


async def test_fault_busy_answers_453(server: ReplayServer) -> None:
    info = await describe(server.url(HOSTS[0], "/cam9"), HOSTS[0])
    assert isinstance(info, MediaFailure) and info.cause == MediaCause.RTSP_BANDWIDTH


async def test_fault_slow_delays_every_reply(server: ReplayServer) -> None:
    url = server.url(HOSTS[2], "/cam0")
    late = await describe(url, HOSTS[2], timeout=0.3)
    assert isinstance(late, MediaFailure) and late.cause == MediaCause.RTSP_TIMEOUT
    t0 = time.monotonic()
    info = await describe(url, HOSTS[2], timeout=5.0)
    assert isinstance(info, RtspInfo) and time.monotonic() - t0 >= 0.95  # OPTIONS and DESCRIBE, 0.5 s each


async def test_session_cap_per_host_answers_453(server: ReplayServer) -> None:
    clients = [await RawClient.open(server.url(HOSTS[1], f"/cam{i}")) for i in range(3)]
    try:
        assert [await c.play() for c in clients] == [200, 200, 453]
        clients[0].close()
        await asyncio.sleep(0.1)
        late = await RawClient.open(server.url(HOSTS[1], "/cam4"))
        clients.append(late)
        assert await late.play() == 200  # a slot freed by the closed connection
    finally:
        for c in clients:
            c.close()


# --- in a child process ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def child() -> Iterator[object]:
    proc = start_replay_process(SPEC, ["127.72.1.1", "127.72.1.2"], faults={"/cam5": "busy"}, startup_timeout_s=120)
    try:
        yield proc
    finally:
        proc.stop()


async def test_child_process_serves_and_reports_its_cpu(child: object) -> None:
    from probes.sim.rtsp_replay import ReplayProcess

    assert isinstance(child, ReplayProcess)
    info = await describe(child.url("127.72.1.2", "/cam0"), "127.72.1.2")
    assert isinstance(info, RtspInfo) and info.codec == "H264" and (info.width, info.height) == (1920, 1080)
    busy = await describe(child.url("127.72.1.1", "/cam5"), "127.72.1.1")
    assert isinstance(busy, MediaFailure) and busy.cause == MediaCause.RTSP_BANDWIDTH
    client = await RawClient.open(child.url("127.72.1.1", "/cam2"))
    try:
        assert await client.play() == 200
        nals = depacketise((await read_access_unit(client))[0])
        assert [n[0] & 0x1F for n in nals][:3] == [7, 8, 5]
    finally:
        client.close()
    stats = await asyncio.to_thread(child.stats)
    assert stats["connections"] >= 3 and stats["sessions"] >= 1 and stats["cpu_s"] > 0
    assert stats["bytes_sent"] > 0

