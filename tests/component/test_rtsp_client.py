"""The rtsp stage's client (probes.media.rtsp): OPTIONS + DESCRIBE against the real GStreamer RTSP server for the
happy path, and against small RTSP stand-ins on real local sockets for what cameras do wrong: Digest with and
without qop, Basic, a wrong password (answered once, never looped), 453, a hang, garbage, oversized replies,
audio-only SDPs, redirects, and URIs the address policy refuses (a recorder socket there must see nothing).
Every wait is bounded by the client's own timeout plus a margin.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio

from probes.media import MediaFailure, RtspInfo, rtsp_describe
from probes.policy import AddressPolicy
from probes.sim.rtsp import RtspServer, start_rtsp_server
from tests import standins

POLICY = AddressPolicy.build()
USER, PASSWORD = "admin", "Rtsp-Secret-42"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Media Presentation\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=x-dimensions:2560,1440\r\na=control:trackID=1\r\n"
    "m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)
AUDIO_ONLY = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"


# --- the real GStreamer server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gst() -> Iterator[RtspServer]:
    server = start_rtsp_server(1, width=640, height=480)
    try:
        yield server
    finally:
        server.stop()


async def describe(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
    device_ip: str = "127.0.0.1",
) -> RtspInfo | MediaFailure:
    return await asyncio.wait_for(
        rtsp_describe(url, username=user, password=password, timeout=timeout, policy=POLICY, device_ip=device_ip),
        timeout + 5,
    )


async def test_gstreamer_stream_is_described_with_codec_and_resolution(gst: RtspServer) -> None:
    info = await describe(gst.url("/cam0"))
    assert info == RtspInfo("H264", 640, 480, ("video/H264",), "GStreamer RTSP server")


async def test_gstreamer_stream_named_by_the_cameras_lan_address(gst: RtspServer) -> None:
    # A camera behind NAT names its LAN address: the policy means the device itself (DOMAIN 7.4).
    info = await describe(f"rtsp://192.168.1.64:{gst.port}/cam0")
    assert isinstance(info, RtspInfo) and (info.width, info.height) == (640, 480)


async def test_gstreamer_unknown_path_is_not_found(gst: RtspServer) -> None:
    got = await describe(gst.url("/no-such-mount"))
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_not_found"


async def test_gstreamer_on_a_loopback_address_the_device_does_not_own_is_refused(gst: RtspServer) -> None:
    # The device answered ONVIF from 127.0.0.9; its stream URI names 127.0.0.1: another host, never opened.
    got = await describe(gst.url("/cam0"), device_ip="127.0.0.9")
    assert isinstance(got, MediaFailure) and got.cause == "address_refused"


# --- RTSP stand-ins ----------------------------------------------------------------------------------------------


Request = standins.RtspRequest
StandIn = standins.StandIn[Request]


def reply(cseq: str, status: str = "200 OK", headers: tuple[str, ...] = (), body: str = "") -> bytes:
    return standins.rtsp_reply(cseq, status, ("Server: StandIn/1.0", *headers), body)


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[StandIn]]]:
    async with standins.rtsp_stand_ins() as start:
        yield start


def ok_describe(request: Request) -> bytes:
    cseq = request.headers["cseq"]
    if request.method == "OPTIONS":
        return reply(cseq, headers=("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN",))
    return reply(cseq, body=SDP)


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_server(*, qop: bool, nonce: str = "5f1ce3a1b2") -> Callable[[Request], Awaitable[bytes]]:
    """Digest-protected DESCRIBE (OPTIONS open, as most cameras); the response is checked with hashlib here."""
    challenge = f'Digest realm="IP Camera", nonce="{nonce}"' + (', qop="auth"' if qop else "")

    async def handle(request: Request) -> bytes:
        cseq = request.headers["cseq"]
        if request.method == "OPTIONS":
            return ok_describe(request)
        auth = request.headers.get("authorization", "")
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', auth.removeprefix("Digest ")))
        if auth.startswith("Digest ") and params.get("nonce") == nonce:
            ha1 = md5(f"{USER}:IP Camera:{PASSWORD}")
            ha2 = md5(f"DESCRIBE:{params['uri']}")
            if qop:
                expected = md5(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
            else:
                expected = md5(f"{ha1}:{nonce}:{ha2}")
            if params.get("response") == expected and params.get("username") == USER:
                return ok_describe(request)
        return reply(cseq, "401 Unauthorized", (f"WWW-Authenticate: {challenge}",))

    return handle


def authorized(stand_in: StandIn) -> list[Request]:
    return [r for r in stand_in.requests if "authorization" in r.headers]


@pytest.mark.parametrize("qop", [True, False], ids=["qop-auth", "rfc2069"])
async def test_digest_login(serve: Callable[..., Awaitable[StandIn]], qop: bool) -> None:
    cam = await serve(digest_server(qop=qop))
    info = await describe(cam.url(), user=USER, password=PASSWORD)
    assert info == RtspInfo("H265", 2560, 1440, ("video/H265", "audio/PCMA"), "StandIn/1.0")
    assert [r.method for r in cam.requests] == ["OPTIONS", "DESCRIBE", "DESCRIBE"]
    assert cam.connections == 1


async def test_wrong_password_is_answered_once_and_never_shown(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(digest_server(qop=True))
    got = await describe(cam.url(), user=USER, password="Wrong-Pass-77")
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_auth"
    assert len(authorized(cam)) == 1  # one failed login per check: no retry loop towards a lockout
    assert "Wrong-Pass-77" not in got.detail and "Digest" in got.detail


@pytest.mark.parametrize("stale", [True, False], ids=["stale-renewed-once", "new-nonce-stands"])
async def test_nonce_expiring_between_options_and_describe(
    serve: Callable[..., Awaitable[StandIn]], stale: bool
) -> None:
    """OPTIONS needs the login too; the camera then refuses the nonce for DESCRIBE. Stale: the password was right,
    renew once. Not stale: the 401 is the verdict (a camera counting it as a failed login sees one, not a loop)."""
    checks = {"first": digest_server(qop=True, nonce="nonce-one"), "second": digest_server(qop=True, nonce="n-two")}
    state = {"current": "first"}

    async def handle(request: Request) -> bytes:
        if request.method == "DESCRIBE" and state["current"] == "first" and "authorization" in request.headers:
            state["current"] = "second"
            flag = ", stale=TRUE" if stale else ""
            challenge = f'Digest realm="IP Camera", nonce="n-two", qop="auth"{flag}'
            return reply(request.headers["cseq"], "401 Unauthorized", (f"WWW-Authenticate: {challenge}",))
        if request.method == "OPTIONS" and "authorization" not in request.headers:
            challenge = 'Digest realm="IP Camera", nonce="nonce-one", qop="auth"'
            return reply(request.headers["cseq"], "401 Unauthorized", (f"WWW-Authenticate: {challenge}",))
        if request.method == "OPTIONS":
            return ok_describe(request)
        return await checks[state["current"]](request)

    cam = await serve(handle)
    got = await describe(cam.url(), user=USER, password=PASSWORD)
    assert isinstance(got, RtspInfo) == stale, got
    assert [r.method for r in authorized(cam)] == ["OPTIONS", "DESCRIBE", "DESCRIBE"][: 3 if stale else 2]


async def test_no_credentials_on_a_protected_stream(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(digest_server(qop=True))
    got = await describe(cam.url())
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_auth" and not authorized(cam)


async def test_basic_only_camera(serve: Callable[..., Awaitable[StandIn]]) -> None:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    async def handle(request: Request) -> bytes:
        if request.headers.get("authorization") == f"Basic {token}":
            return ok_describe(request)
        return reply(request.headers["cseq"], "401 Unauthorized", ('WWW-Authenticate: Basic realm="cam"',))

    cam = await serve(handle)
    info = await describe(cam.url(), user=USER, password=PASSWORD)
    assert isinstance(info, RtspInfo) and info.codec == "H265"
    # OPTIONS challenged, answered once; DESCRIBE carried the credential from the start
    assert [r.method for r in cam.requests] == ["OPTIONS", "OPTIONS", "DESCRIBE"]


async def test_digest_preferred_when_both_are_offered(serve: Callable[..., Awaitable[StandIn]]) -> None:
    digest = digest_server(qop=True)

    async def handle(request: Request) -> bytes:
        answer = await digest(request)
        return answer.replace(
            b"WWW-Authenticate: Digest", b'WWW-Authenticate: Basic realm="x"\r\nWWW-Authenticate: Digest'
        )

    cam = await serve(handle)
    assert isinstance(await describe(cam.url(), user=USER, password=PASSWORD), RtspInfo)
    assert all(r.headers["authorization"].startswith("Digest ") for r in authorized(cam))


async def test_credentials_in_the_uri_are_used_but_never_sent_in_the_request_line(
    serve: Callable[..., Awaitable[StandIn]],
) -> None:
    cam = await serve(digest_server(qop=False))
    info = await describe(cam.url(userinfo=f"{USER}:Rtsp-Secret%2D42@"))
    assert isinstance(info, RtspInfo)
    assert all("@" not in r.uri and PASSWORD not in r.uri for r in cam.requests)


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        ("453 Not Enough Bandwidth", "rtsp_bandwidth"),
        ("404 Stream Not Found", "rtsp_not_found"),
        ("503 Service Unavailable", "rtsp_error"),
        ("302 Moved", "rtsp_error"),
    ],
)
async def test_describe_errors(serve: Callable[..., Awaitable[StandIn]], status: str, cause: str) -> None:
    async def handle(request: Request) -> bytes:
        if request.method == "OPTIONS":
            return ok_describe(request)
        return reply(request.headers["cseq"], status)

    cam = await serve(handle)
    got = await describe(cam.url())
    assert isinstance(got, MediaFailure) and got.cause == cause and status.split()[0] in got.detail


async def test_a_503_is_tried_once_more_after_a_pause(serve: Callable[..., Awaitable[StandIn]]) -> None:
    # gst-rtsp-server answers 503 while a shared media is torn down; cameras restarting an encoder do the same.
    answered: list[str] = []

    async def handle(request: Request) -> bytes:
        if request.method == "OPTIONS":
            return ok_describe(request)
        answered.append(request.method)
        if len(answered) == 1:
            return reply(request.headers["cseq"], "503 Service Unavailable", ("Retry-After: 0.2",))
        return ok_describe(request)

    cam = await serve(handle)
    start = time.monotonic()
    info = await describe(cam.url())
    assert isinstance(info, RtspInfo) and answered == ["DESCRIBE", "DESCRIBE"]
    assert 0.15 < time.monotonic() - start < 3.0  # waited the Retry-After, not longer


async def test_a_503_that_stays_is_an_error_after_one_retry(serve: Callable[..., Awaitable[StandIn]]) -> None:
    async def handle(request: Request) -> bytes:
        if request.method == "OPTIONS":
            return ok_describe(request)
        return reply(request.headers["cseq"], "503 Service Unavailable", ("Retry-After: 3600",))

    cam = await serve(handle)
    start = time.monotonic()
    got = await describe(cam.url())
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_error" and "503" in got.detail
    assert sum(r.method == "DESCRIBE" for r in cam.requests) == 2  # one retry, never a loop
    assert time.monotonic() - start < 3.0  # Retry-After capped at 1 s


async def test_audio_only_stream_has_no_video(serve: Callable[..., Awaitable[StandIn]]) -> None:
    async def handle(request: Request) -> bytes:
        return reply(request.headers["cseq"], body=AUDIO_ONLY)

    got = await describe((await serve(handle)).url())
    assert got == MediaFailure("rtsp_no_video", "SDP tracks: audio/PCMU")


async def test_hanging_camera_costs_no_more_than_the_timeout(serve: Callable[..., Awaitable[StandIn]]) -> None:
    async def handle(request: Request) -> bytes | None:
        return None if request.method == "DESCRIBE" else ok_describe(request)

    cam = await serve(handle)
    start = time.monotonic()
    got = await describe(cam.url(), timeout=0.5)
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_timeout"
    assert time.monotonic() - start < 1.5


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # a web server on the RTSP port
        b"\x00\x01garbage\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 9999999\r\n\r\n",  # over the body cap
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n" + b"X-Pad: " + b"a" * 70_000,  # header never ends, over the cap
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nhello",  # DESCRIBE body that is no SDP
    ],
    ids=["http", "garbage", "huge-body", "huge-header", "not-sdp"],
)
async def test_garbage_replies(serve: Callable[..., Awaitable[StandIn]], answer: bytes) -> None:
    async def handle(request: Request) -> bytes:
        return answer.replace(b"CSeq: 1", f"CSeq: {request.headers['cseq']}".encode())

    got = await describe((await serve(handle)).url())
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_protocol", got


async def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port just bound and released: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    got = await describe(f"rtsp://127.0.0.1:{port}/live")
    assert isinstance(got, MediaFailure) and got.cause == "rtsp_refused"


# --- the address policy ------------------------------------------------------------------------------------------


async def test_refused_stream_uri_is_never_opened(serve: Callable[..., Awaitable[StandIn]]) -> None:
    recorder = await serve(ok_describe, host="127.0.0.2")
    got = await describe(recorder.url(userinfo=f"{USER}:{PASSWORD}@"), user=USER, password=PASSWORD)
    assert isinstance(got, MediaFailure) and got.cause == "address_refused"
    assert recorder.connections == 0 and PASSWORD not in got.detail


async def test_redirect_off_the_policy_is_not_followed(serve: Callable[..., Awaitable[StandIn]]) -> None:
    recorder = await serve(ok_describe, host="127.0.0.2")

    async def handle(request: Request) -> bytes:
        return reply(request.headers["cseq"], "302 Found", (f"Location: {recorder.url('/elsewhere')}",))

    got = await describe((await serve(handle)).url())
    assert isinstance(got, MediaFailure) and got.cause == "address_refused"
    assert recorder.connections == 0


async def test_redirect_on_the_device_is_followed(serve: Callable[..., Awaitable[StandIn]]) -> None:
    target = await serve(ok_describe)

    async def handle(request: Request) -> bytes:
        return reply(request.headers["cseq"], "301 Moved Permanently", (f"Location: {target.url('/main')}",))

    info = await describe((await serve(handle)).url())
    assert isinstance(info, RtspInfo) and target.requests[-1].uri == target.url("/main")
