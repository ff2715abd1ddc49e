"""The snapshot stage's fetcher (probes.media.snapshot) against the simulated cameras' snapshot URIs (HTTP Digest,
anonymous, a URI naming the device's LAN address) and small HTTP stand-ins on real local sockets for what goes
wrong: an HTML page, a truncated JPEG, a wrong size, a hang, a huge body, Basic-only auth, redirects, and URIs
the address policy refuses (a recorder socket there must see nothing). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import cv2
import numpy as np
import pytest
import pytest_asyncio

from probes.media import MediaFailure, SnapshotInfo, fetch_snapshot, jpeg_size
from probes.policy import AddressPolicy
from probes.sim import SimFleet, build_fleet
from probes.sim.devices import DEFAULT_PASSWORD, DEFAULT_USERNAME, DeviceSpec
from probes.sim.snapshot import snapshot_jpeg
from tests import standins

POLICY = AddressPolicy.build()
SIM_SIZE = (352, 288)  # probes/sim/snapshot.py


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{140 + pid % 40}.{(pid // 40) % 250}.1"


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    devices = build_fleet(
        6,
        fault_mix={},
        faults_by_index={2: {"private_addrs"}, 3: {"snapshot_hang"}, 4: {"snapshot_html"}, 5: {"snapshot_small"}},
        auth_by_index={0: "digest", 1: "wsse", 2: "both", 3: "digest", 4: "digest", 5: "both"},
        base_host=_base_host(),
        port=0,
    )
    async with SimFleet(devices=devices, rtsp=False, discovery=False) as sim:
        yield sim


async def fetch(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    device_ip: str = "127.0.0.1",
    timeout: float = 5.0,
    expect: tuple[int, int] | None = None,
    max_bytes: int = 8 * 1024 * 1024,
) -> SnapshotInfo | MediaFailure:
    return await asyncio.wait_for(
        fetch_snapshot(
            url,
            username=user,
            password=password,
            timeout=timeout,
            policy=POLICY,
            device_ip=device_ip,
            expect=expect,
            max_bytes=max_bytes,
        ),
        timeout + 5,
    )


def snapshot_url(device: DeviceSpec) -> str:
    return device.snapshot_uri(device.profiles[0])


# --- the simulated fleet -------------------------------------------------------------------------------------------


async def test_digest_snapshot_of_the_expected_size(fleet: SimFleet) -> None:
    d = fleet.devices[0]
    got = await fetch(
        snapshot_url(d), user=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, device_ip=d.host, expect=SIM_SIZE
    )
    assert got == SnapshotInfo(*SIM_SIZE, len(snapshot_jpeg(d.index)), "image/jpeg")


async def test_wrong_size_wrong_password_and_anonymous(fleet: SimFleet) -> None:
    d = fleet.devices[0]
    wrong_size = await fetch(
        snapshot_url(d), user=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, device_ip=d.host, expect=(1920, 1080)
    )
    assert wrong_size == MediaFailure("snapshot_size", "352x288, expected 1920x1080")
    wrong = await fetch(snapshot_url(d), user=DEFAULT_USERNAME, password="Not-The-Pass", device_ip=d.host)
    assert isinstance(wrong, MediaFailure) and wrong.cause == "snapshot_auth" and "Not-The-Pass" not in wrong.detail
    anonymous = await fetch(snapshot_url(d), device_ip=d.host)
    assert isinstance(anonymous, MediaFailure) and anonymous.cause == "snapshot_auth"
    # a WSSE-only simulated camera serves its snapshot without HTTP auth
    open_cam = fleet.devices[1]
    assert isinstance(await fetch(snapshot_url(open_cam), device_ip=open_cam.host), SnapshotInfo)


async def test_lan_address_in_the_uri_means_the_device_itself(fleet: SimFleet) -> None:
    d = fleet.devices[2]
    url = snapshot_url(d)
    assert d.host not in url  # the URI names the camera's LAN address (DOMAIN 7.4)
    got = await fetch(url, user=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, device_ip=d.host, expect=SIM_SIZE)
    assert isinstance(got, SnapshotInfo)


async def test_simulated_snapshot_faults(fleet: SimFleet) -> None:
    def get(index: int, timeout: float = 5.0) -> Awaitable[SnapshotInfo | MediaFailure]:
        d = fleet.devices[index]
        return fetch(
            snapshot_url(d),
            user=DEFAULT_USERNAME,
            password=DEFAULT_PASSWORD,
            device_ip=d.host,
            expect=SIM_SIZE,
            timeout=timeout,
        )

    start = time.monotonic()
    hung = await get(3, timeout=0.5)
    assert isinstance(hung, MediaFailure) and hung.cause == "snapshot_timeout"
    assert time.monotonic() - start < 1.5
    html = await get(4)
    assert isinstance(html, MediaFailure) and html.cause == "snapshot_not_jpeg" and "text/html" in html.detail
    assert await get(5) == MediaFailure("snapshot_size", "176x144, expected 352x288")


# --- HTTP stand-ins ------------------------------------------------------------------------------------------------


def parse_request(first: str, headers: dict[str, str]) -> dict[str, str]:
    headers["_line"] = first
    return headers


StandIn = standins.StandIn[dict[str, str]]


def http(status: str, body: bytes = b"", headers: tuple[str, ...] = (), content_type: str = "image/jpeg") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[StandIn]]]:
    async with standins.stand_ins(parse_request, scheme="http", default_path="/snap.jpg") as start:
        yield start


JPEG = snapshot_jpeg(0)


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (http("200 OK", b"<html><body>Please log in</body></html>", content_type="text/html"), "snapshot_not_jpeg"),
        (http("200 OK", JPEG[: len(JPEG) // 2]), "snapshot_not_jpeg"),  # truncated: no EOI
        (http("200 OK", b""), "snapshot_not_jpeg"),
        (http("500 Internal Server Error"), "snapshot_http"),
        (http("404 Not Found"), "snapshot_http"),
        (b"RTSP/1.0 200 OK\r\n\r\n", "snapshot_http"),  # not HTTP at all
        (http("200 OK", b"\xff\xd8" + b"\x00" * 300_000 + b"\xff\xd9"), "snapshot_too_large"),
    ],
    ids=["html", "truncated", "empty", "500", "404", "not-http", "too-large"],
)
async def test_bad_snapshots(serve: Callable[..., Awaitable[StandIn]], answer: bytes, cause: str) -> None:
    cam = await serve(lambda _r: answer)
    got = await fetch(cam.url(), max_bytes=256 * 1024)
    assert isinstance(got, MediaFailure) and got.cause == cause, got


async def test_hanging_snapshot_costs_no_more_than_the_timeout(serve: Callable[..., Awaitable[StandIn]]) -> None:
    cam = await serve(lambda _r: None)
    start = time.monotonic()
    got = await fetch(cam.url(), timeout=0.5)
    assert isinstance(got, MediaFailure) and got.cause == "snapshot_timeout"
    assert time.monotonic() - start < 1.5


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    got = await fetch(f"http://127.0.0.1:{port}/snap.jpg")
    assert isinstance(got, MediaFailure) and got.cause == "snapshot_refused"


async def test_basic_only_camera_and_credentials_from_the_uri(serve: Callable[..., Awaitable[StandIn]]) -> None:
    token = base64.b64encode(b"viewer:Snap-Secret-9").decode()

    def handle(request: dict[str, str]) -> bytes:
        if request.get("authorization") == f"Basic {token}":
            return http("200 OK", JPEG)
        return http("401 Unauthorized", headers=('WWW-Authenticate: Basic realm="cam"',), content_type="text/plain")

    cam = await serve(handle)
    got = await fetch(cam.url(), user="viewer", password="Snap-Secret-9", expect=SIM_SIZE)
    assert isinstance(got, SnapshotInfo)
    assert "authorization" not in cam.requests[0]  # Basic only after the camera asked for it
    from_uri = await fetch(cam.url().replace("http://", "http://viewer:Snap-Secret-9@"))
    assert isinstance(from_uri, SnapshotInfo)
    assert all("Snap-Secret" not in r["_line"] and "@" not in r["_line"] for r in cam.requests)
    wrong = await fetch(cam.url(), user="viewer", password="Bad-Secret-1")
    assert isinstance(wrong, MediaFailure) and wrong.cause == "snapshot_auth"
    assert "Bad-Secret-1" not in wrong.detail and token not in wrong.detail


async def test_refused_uri_is_never_opened(serve: Callable[..., Awaitable[StandIn]]) -> None:
    recorder = await serve(lambda _r: http("200 OK", JPEG), host="127.0.0.2")
    got = await fetch(recorder.url().replace("http://", "http://admin:Secret-77@"), device_ip="127.0.0.1")
    assert isinstance(got, MediaFailure) and got.cause == "address_refused" and "Secret-77" not in got.detail
    assert recorder.connections == 0


async def test_redirects(serve: Callable[..., Awaitable[StandIn]]) -> None:
    recorder = await serve(lambda _r: http("200 OK", JPEG), host="127.0.0.2")
    off_policy = await serve(lambda _r: http("302 Found", headers=(f"Location: {recorder.url()}",)))
    got = await fetch(off_policy.url())
    assert isinstance(got, MediaFailure) and got.cause == "address_refused"
    assert recorder.connections == 0
    relative = await serve(
        lambda r: (
            http("200 OK", JPEG) if "/real.jpg" in r["_line"] else http("302 Found", headers=("Location: /real.jpg",))
        )
    )
    assert isinstance(await fetch(relative.url()), SnapshotInfo)
    loop = await serve(lambda _r: http("302 Found", headers=("Location: /again",)))
    looped = await fetch(loop.url())
    assert isinstance(looped, MediaFailure) and looped.cause == "snapshot_http" and "redirects" in looped.detail


# --- JPEG validation -----------------------------------------------------------------------------------------------


def test_jpeg_size_reads_the_frame_header() -> None:
    img = np.zeros((123, 456, 3), dtype=np.uint8)
    ok, baseline = cv2.imencode(".jpg", img)
    ok2, progressive = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and ok2
    assert jpeg_size(bytes(baseline.tobytes())) == (456, 123)
    assert jpeg_size(bytes(progressive.tobytes())) == (456, 123)  # SOF2
    assert jpeg_size(bytes(baseline.tobytes()) + b"\x00\x00\r\n") == (456, 123)  # padding after EOI
    assert isinstance(jpeg_size(b"\xff\xd8\xff\xd9"), str)  # markers but no frame
    assert isinstance(jpeg_size(b"\x89PNG\r\n\x1a\n"), str)
    zero = bytearray(baseline.tobytes())
    sof = zero.find(b"\xff\xc0")
    zero[sof + 5 : sof + 9] = b"\x00\x00\x00\x00"
    assert jpeg_size(bytes(zero)) == "JPEG frame header gives 0x0"
