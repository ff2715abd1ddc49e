"""The frame sampler (probes.frames): frames from the real GStreamer RTSP server (the pedestrian clip and a test
pattern), and from RTSP stand-ins on real local sockets that send RTP built here (tests/rtp_streams.py) for what
cameras do: Digest on every request, a join in the middle of a GOP, RTCP and server requests between RTP frames,
H.265 with its parameter sets only in the SDP; and what goes wrong: a wrong password, 453, a stream that never
sends RTP, garbage, a keyframe that never comes within the byte cap, a camera that never answers, a URI the
address policy refuses. Snapshots: a JPEG decoded, and a reply that never finishes. Every wait is bounded by the
sampler's own budget plus a margin; no credential appears in a detail.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import cv2
import numpy as np
import pytest
import pytest_asyncio

from probes.frames import Frame, Sampler, SampleTimeouts, sample_rtsp, sample_snapshot
from probes.media import MediaFailure
from probes.policy import AddressPolicy
from probes.sim.rtsp import RtspServer, start_rtsp_server
from tests import standins
from tests.rtp_streams import encode, interleaved, nal_type, payloads, rtp, sprop, stream_bytes

POLICY = AddressPolicy.build()
USER, PASSWORD = "admin", "Frame-Secret-77"
VIDEO = "tests/data/video/pedestrians_480x360_8s.mp4"
QUICK = SampleTimeouts(connect=2.0, first_frame=1.0, total=4.0)


async def sample(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    device_ip: str = "127.0.0.1",
    timeouts: SampleTimeouts = QUICK,
    **kwargs: object,
) -> list[Frame] | MediaFailure:
    return await asyncio.wait_for(
        sample_rtsp(
            url,
            username=user,
            password=password,
            policy=POLICY,
            device_ip=device_ip,
            timeouts=timeouts,
            **kwargs,  # type: ignore[arg-type]
        ),
        timeouts.total + 5,
    )


# --- the real GStreamer server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pedestrians() -> Iterator[RtspServer]:
    server = start_rtsp_server(1, video=VIDEO, width=480, height=360)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pattern() -> Iterator[RtspServer]:
    server = start_rtsp_server(1, width=320, height=240)
    try:
        yield server
    finally:
        server.stop()


async def test_a_frame_of_the_pedestrian_clip(pedestrians: RtspServer) -> None:
    got = await sample(pedestrians.url("/cam0"), timeouts=SampleTimeouts())
    assert isinstance(got, list) and len(got) == 1, got
    frame = got[0]
    assert (frame.width, frame.height, frame.codec, frame.source) == (480, 360, "H264", "rtsp")
    assert frame.image.shape == (360, 480, 3) and frame.image.dtype == np.uint8
    assert frame.image.std() > 20  # a scene, not a grey decoder placeholder
    assert frame.first_byte_ms is not None and 0 < frame.first_byte_ms <= frame.latency_ms
    assert frame.bytes_read > 0


async def test_spaced_frames_of_a_test_pattern(pattern: RtspServer) -> None:
    got = await sample(pattern.url("/cam0"), timeouts=SampleTimeouts(), frames=2, spacing_s=0.5)
    assert isinstance(got, list) and [(f.width, f.height) for f in got] == [(320, 240), (320, 240)], got
    assert got[1].latency_ms - got[0].latency_ms >= 500
    assert not np.array_equal(got[0].image, got[1].image)  # the pattern scrolls


# --- RTSP stand-ins -----------------------------------------------------------------------------------------------


Request = standins.RtspRequest
StandIn = standins.StandIn[Request]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[StandIn]]]:
    async with standins.rtsp_stand_ins() as start:
        yield start


reply = standins.rtsp_reply


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


H264 = encode("H264", 160, 120, 12, 5)
H265 = encode("H265", 160, 128, 6, 5)
NONCE = "a1b2c3d4"
CHALLENGE = f'Digest realm="Camera", nonce="{NONCE}", qop="auth"'


def digest_ok(request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', auth.removeprefix("Digest ")))
    if not auth.startswith("Digest ") or params.get("nonce") != NONCE or params.get("username") != USER:
        return False
    ha1, ha2 = md5(f"{USER}:Camera:{PASSWORD}"), md5(f"{request.method}:{params['uri']}")
    return params.get("response") == md5(f"{ha1}:{NONCE}:{params['nc']}:{params['cnonce']}:auth:{ha2}")


def camera(
    after_play: bytes | Callable[[], Awaitable[bytes]] = b"",
    *,
    codec: str = "H264",
    fmtp: str | None = None,
    auth: bool = False,
    setup_status: str = "200 OK",
    transport: str = "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=00001234",
) -> Callable[[Request], Awaitable[bytes | None]]:
    """An RTSP camera: OPTIONS, DESCRIBE (an SDP with a Content-Base), SETUP (interleaved 0-1, a session id),
    PLAY answered and followed by ``after_play``; Digest on everything but OPTIONS when ``auth``."""
    units = H264 if codec == "H264" else H265
    params = fmtp if fmtp is not None else sprop(codec, units)

    async def handle(request: Request) -> bytes | None:
        cseq = request.headers["cseq"]
        if request.method == "OPTIONS":
            return reply(cseq, headers=("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN",))
        if auth and not digest_ok(request):
            return reply(cseq, "401 Unauthorized", (f"WWW-Authenticate: {CHALLENGE}",))
        if request.method == "DESCRIBE":
            sdp = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=StandIn\r\nt=0 0\r\na=control:*\r\n"
                f"m=video 0 RTP/AVP 96\r\na=rtpmap:96 {codec}/90000\r\na=fmtp:96 {params}\r\n"
                "a=control:trackID=1\r\nm=audio 0 RTP/AVP 8\r\na=control:trackID=2\r\n"
            )
            return reply(cseq, headers=(f"Content-Base: {request.uri}/",), body=sdp)
        if request.method == "SETUP":
            if setup_status != "200 OK":
                return reply(cseq, setup_status)
            assert request.uri.endswith("/live/trackID=1"), request.uri
            return reply(cseq, headers=(f"Transport: {transport}", "Session: 7DF3A9;timeout=60"))
        if request.method == "PLAY":
            assert request.headers.get("session") == "7DF3A9"
            data = after_play if isinstance(after_play, bytes) else await after_play()
            return reply(cseq, headers=("Session: 7DF3A9", "RTP-Info: url=trackID=1;seq=1000")) + data
        return reply(cseq, headers=("Session: 7DF3A9",))  # TEARDOWN

    return handle


def mid_gop_stream() -> bytes:
    """From the third access unit (two P-frames before the next keyframe), with an RTCP report and a server
    request slipped between the RTP frames."""
    data = stream_bytes("H264", H264[2:3])
    data += interleaved(b"\x80\xc8\x00\x06" + bytes(24), channel=1)  # RTCP sender report
    data += b"SET_PARAMETER rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nping"
    return data + stream_bytes("H264", H264[3:], seq=2000, ts=27000)


def no_secret(got: object) -> None:
    if isinstance(got, MediaFailure):
        assert PASSWORD not in got.detail and PASSWORD not in str(got)


async def test_digest_login_mid_gop_join_and_interleaved_noise(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(camera(mid_gop_stream(), auth=True))
    got = await sample(cam.url(userinfo=f"{USER}:{PASSWORD}@"), user=USER, password=PASSWORD)
    assert isinstance(got, list) and [(f.width, f.height, f.codec) for f in got] == [(160, 120, "H264")], got
    methods = [r.method for r in cam.requests]
    assert methods[:6] == ["OPTIONS", "DESCRIBE", "DESCRIBE", "SETUP", "PLAY", "TEARDOWN"][: len(methods[:6])]
    assert all(PASSWORD not in r.uri and "@" not in r.uri for r in cam.requests)
    assert all(digest_ok(r) for r in cam.requests if r.method in ("SETUP", "PLAY"))


async def test_h265_with_parameter_sets_only_in_the_sdp(serve: Callable[..., Awaitable[StandIn]]) -> None:
    bare = [(tuple(n for n in nals if nal_type("H265", n) not in (32, 33, 34)), key) for nals, key in H265]
    cam = await serve(camera(stream_bytes("H265", bare[1:]), codec="H265"))
    got = await sample(cam.url())
    assert isinstance(got, list) and [(f.width, f.height, f.codec) for f in got] == [(160, 128, "H265")], got


async def test_wrong_password_is_tried_once(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(camera(mid_gop_stream(), auth=True))
    got = await sample(cam.url(), user=USER, password="wrong-" + PASSWORD)
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_auth", got
    assert [r.method for r in cam.requests] == ["OPTIONS", "DESCRIBE", "DESCRIBE"]
    assert "wrong-" not in got.detail


async def test_no_slot_free_is_rtsp_bandwidth(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(camera(setup_status="453 Not Enough Bandwidth"))
    got = await sample(cam.url())
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_bandwidth", got


async def test_a_camera_that_sets_up_udp_instead(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(camera(transport="RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971"))
    got = await sample(cam.url())
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_error" and "UDP" in got.detail, got
    assert "PLAY" not in [r.method for r in cam.requests]


async def test_a_stream_that_never_sends_rtp_times_out_within_its_budget(
    serve: Callable[..., Awaitable[StandIn]],
) -> None:
    cam = await serve(camera(b"", auth=True))
    start = time.monotonic()
    got = await sample(cam.url(), user=USER, password=PASSWORD, timeouts=SampleTimeouts(2.0, 0.6, 5.0))
    assert isinstance(got, MediaFailure) and got.cause == "frame_timeout", got
    assert "no RTP at all" in got.detail and time.monotonic() - start < 1.6
    no_secret(got)


async def test_a_camera_that_never_answers_times_out_within_the_connect_budget(
    serve: Callable[..., Awaitable[StandIn]],
) -> None:
    cam = await serve(lambda _r: None)
    start = time.monotonic()
    got = await sample(cam.url(), timeouts=SampleTimeouts(0.5, 1.0, 5.0))
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_timeout", got
    assert time.monotonic() - start < 1.5


def random_rtp(count: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(
        interleaved(rtp(rng.randbytes(rng.randrange(20, 1400)), seq=i, ts=i // 4 * 9000, marker=i % 4 == 3))
        for i in range(count)
    )


@pytest.mark.parametrize(
    ("after_play", "cause"),
    [
        (random.Random(1).randbytes(5000), "rtsp_protocol"),  # not interleaved at all
        (b"".join(interleaved(random.Random(i).randbytes(300)) for i in range(60)), "rtsp_protocol"),  # not RTP
        (random_rtp(120, 2), "frame_decode"),  # RTP whose payload is not H.264
    ],
    ids=["bytes", "frames", "rtp"],
)
async def test_garbage_fails_fast(serve: Callable[..., Awaitable[StandIn]], after_play: bytes, cause: str) -> None:
    cam = await serve(camera(after_play, auth=True))
    start = time.monotonic()
    got = await sample(cam.url(), user=USER, password=PASSWORD)
    assert isinstance(got, MediaFailure) and got.cause == cause, got
    assert time.monotonic() - start < QUICK.first_frame  # decided by the bytes, not by the clock
    no_secret(got)


async def test_no_keyframe_within_the_byte_cap(serve: Callable[..., Awaitable[StandIn]]) -> None:
    p_frames = [unit for unit in H264 if not unit[1]] * 10
    cam = await serve(camera(stream_bytes("H264", p_frames)))
    got = await sample(cam.url(), max_bytes=4000)
    assert isinstance(got, MediaFailure) and got.cause == "frame_too_large", got


async def test_an_unsupported_codec_is_not_set_up(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(camera(codec="MP4V-ES", fmtp=""))
    got = await sample(cam.url())
    assert isinstance(got, MediaFailure) and got.cause == "frame_decode", got
    assert "SETUP" not in [r.method for r in cam.requests]


async def test_a_refused_stream_uri_is_never_connected(serve: Callable[..., Awaitable[StandIn]]) -> None:
    recorder = await serve(camera(mid_gop_stream()), host="127.0.0.2")
    got = await sample(recorder.url(userinfo=f"{USER}:{PASSWORD}@"), user=USER, password=PASSWORD)
    assert isinstance(got, MediaFailure) and got.cause == "address_refused", got
    assert recorder.connections == 0
    no_secret(got)


async def test_a_redirect_off_the_policy_is_never_connected(serve: Callable[..., Awaitable[StandIn]]) -> None:
    recorder = await serve(camera(mid_gop_stream()), host="127.0.0.2")

    def redirect(request: Request) -> bytes:
        return reply(request.headers["cseq"], "302 Found", (f"Location: {recorder.url()}",))

    got = await sample((await serve(redirect)).url(), user=USER, password=PASSWORD)
    assert isinstance(got, MediaFailure) and got.cause == "address_refused", got
    assert recorder.connections == 0


async def test_per_host_session_limit(serve: Callable[..., Awaitable[StandIn]]) -> None:
    playing = peak = 0

    async def slow_play() -> bytes:
        nonlocal playing, peak
        playing += 1
        peak = max(peak, playing)
        await asyncio.sleep(0.15)
        playing -= 1
        return stream_bytes("H264", H264[5:7])

    cam = await serve(camera(slow_play))
    sampler = Sampler(concurrency=8, per_host=2, timeouts=QUICK)
    got = await asyncio.wait_for(
        asyncio.gather(
            *(
                sampler.rtsp(cam.url(), username=None, password=None, policy=POLICY, device_ip="127.0.0.1")
                for _ in range(5)
            )
        ),
        15,
    )
    assert all(isinstance(g, list) and g[0].width == 160 for g in got), got
    assert peak == 2 and sampler.peak == 2


# --- snapshots ------------------------------------------------------------------------------------------------------


def parse_http(first: str, headers: dict[str, str]) -> dict[str, str]:
    return {"_line": first, **headers}


@pytest_asyncio.fixture
async def serve_http() -> AsyncIterator[Callable[..., Awaitable[standins.StandIn[dict[str, str]]]]]:
    async with standins.stand_ins(parse_http, scheme="http", default_path="/snap.jpg") as start:
        yield start


def http(body: bytes, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body) if length is None else length}"
    return (head + "\r\n\r\n").encode() + body


async def test_snapshot_frame(serve_http: Callable[..., Awaitable[standins.StandIn[dict[str, str]]]]) -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = (255, 0, 0)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    cam = await serve_http(lambda _r: http(jpeg.tobytes()))
    got = await sample_snapshot(
        cam.url(), username=None, password=None, policy=POLICY, device_ip="127.0.0.1", timeout=3.0
    )
    assert isinstance(got, Frame), got
    assert (got.width, got.height, got.codec, got.source, got.first_byte_ms) == (200, 100, "JPEG", "snapshot", None)
    assert got.jpeg == jpeg.tobytes() and got.bytes_read == len(got.jpeg)
    assert got.image[50, 20, 0] > 200 and got.image[50, 150, 0] < 50  # blue on the left (BGR)


async def test_a_snapshot_that_never_finishes(
    serve_http: Callable[..., Awaitable[standins.StandIn[dict[str, str]]]],
) -> None:
    cam = await serve_http(lambda _r: http(b"\xff\xd8\xff\xe0" + bytes(1000), length=100_000))
    start = time.monotonic()
    got = await asyncio.wait_for(
        sample_snapshot(
            cam.url(userinfo=f"{USER}:{PASSWORD}@"),
            username=USER,
            password=PASSWORD,
            policy=POLICY,
            device_ip="127.0.0.1",
            timeout=0.5,
        ),
        5,
    )
    assert isinstance(got, MediaFailure) and got.cause == "snapshot_timeout", got
    assert time.monotonic() - start < 1.5
    no_secret(got)


# --- memory with many streams open ---------------------------------------------------------------------------------


@asynccontextmanager
async def flood_server(unit_bytes: int, packet_bytes: int, limit: int) -> AsyncIterator[tuple[int, list[int]]]:
    """An RTSP server that, once PLAY is answered, sends P-frames (``unit_bytes`` each, FU-A packets of
    ``packet_bytes``) as fast as the connection takes them, never a keyframe, up to ``limit`` bytes (then it
    idles). Yields its port and the bytes sent per connection."""
    nal = b"\x41" + random.Random(3).randbytes(unit_bytes - 1)  # a non-IDR slice, never decoded
    sent: list[int] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(sent)
        sent.append(0)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method = head.split(" ", 1)[0]
                cseq = re.search(r"CSeq: *(\d+)", head, re.IGNORECASE)
                ack = reply(cseq.group(1) if cseq else "0", headers=("Session: F1",))
                if method == "DESCRIBE":
                    sdp = "v=0\r\ns=F\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                    ack = reply(cseq.group(1) if cseq else "0", body=sdp)
                writer.write(ack)
                if method == "PLAY":
                    break
            seq = 0
            for ts in range(0, 9000 * (limit // unit_bytes + 1), 9000):
                parts = payloads("H264", [nal], packet_bytes)
                for j, payload in enumerate(parts):
                    writer.write(interleaved(rtp(payload, seq=seq, ts=ts, marker=j == len(parts) - 1)))
                    seq += 1
                sent[index] += unit_bytes
                await writer.drain()
            await reader.read()  # until the client hangs up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0, backlog=512)
    try:
        yield server.sockets[0].getsockname()[1], sent
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def test_memory_stays_bounded_with_200_streams_open() -> None:
    """200 sessions at once on streams that never give a keyframe: each reads its byte cap (1.5 MiB) and gives
    up. What Python holds at the peak (client and server together, tracemalloc) stays under 800 KiB a session: the
    read buffers are capped and a non-keyframe unit is dropped as soon as it ends."""
    cap = 3 * 2**19
    async with flood_server(60_000, 60_000, cap + 2**19) as (port, sent):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            got = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        sample(f"rtsp://127.0.0.1:{port}/live", max_bytes=cap, timeouts=SampleTimeouts(10, 30, 40))
                        for _ in range(200)
                    )
                ),
                60,
            )
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    causes = {g.cause if isinstance(g, MediaFailure) else "frame" for g in got}
    assert causes == {"frame_too_large"}, causes
    assert len(sent) == 200 and min(sent) >= cap
    assert peak < 200 * 800 * 1024, f"{peak / 2**20:.0f} MiB at the peak"  # sessions keeping their bytes: 300 MiB
