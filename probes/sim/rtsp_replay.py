"""Simulated cameras streaming a PRE-ENCODED H.264 clip over RTSP (RTP over TCP interleaved), cheaply, by the hundred.

The GStreamer server of ``probes/sim/rtsp.py`` encodes live, which costs a core for a few 1080p streams. Here a clip
is encoded ONCE with PyAV's libx264 (1920x1080 by default, a GOP of ``gop_s`` seconds, no B-frames, SPS/PPS before
every IDR; frames of a real video cropped and upscaled, or textured synthetic frames, with a little sensor grain),
cached under a directory keyed by its parameters, and packetised into RTP once (RFC 6184: single NAL units and FU-A).
Serving a session then copies prepared bytes and patches sequence numbers and timestamps: hundreds of 1080p
streams cost the server process little CPU.

Protocol: OPTIONS, DESCRIBE (SDP with sprop-parameter-sets, profile-level-id, a=framesize and a=x-dimensions),
SETUP (``RTP/AVP/TCP;interleaved=a-b`` only: a UDP transport is answered ``461 Unsupported Transport``), PLAY (sends
from a keyframe at once, then paces at the clip's fps, looping), GET_PARAMETER/SET_PARAMETER (keep-alive),
TEARDOWN (stops sending). Optional Digest authentication (RFC 2617, qop auth or none) on DESCRIBE/SETUP/PLAY.

Devices: one listening socket per loopback address on a common port (as the ONVIF fleet does), each serving the
paths ``/cam<N>``. Fault modes, per path (``/cam3``), per host (``127.72.0.5``) or both (``127.72.0.5/cam3``):

* ``silent``: answers every request, PLAY too, and never sends RTP;
* ``garbage``: RTP at the clip's pace whose payloads are random bytes;
* ``busy``: ``453 Not Enough Bandwidth`` to DESCRIBE, SETUP and PLAY (a camera whose stream slots are taken);
* ``slow``: every reply comes ``slow_delay_s`` late.

``max_sessions`` also caps the sessions set up per host at once (SETUP over the cap: 453), like a camera's slots.

In another process: :func:`start_replay_process` (multiprocessing spawn; the parent reads the server's CPU time)
or ``python -m probes.sim.rtsp_replay --count 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import re
import secrets
import socket
import struct
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numpy as np

from probes.sim.devices import listen_on_all

logger = logging.getLogger(__name__)

FAULT_MODES: Final = ("silent", "garbage", "busy", "slow")
CACHE_ENV: Final = "VMS_SIM_CACHE"
DEFAULT_BASE_HOST: Final = "127.72.0.1"
MAX_PAYLOAD: Final = 1400  # RTP payload bytes per packet (FU-A beyond)
RTP_CLOCK: Final = 90_000
PAYLOAD_TYPE: Final = 96
_MAX_REQUEST: Final = 64 * 1024
_PATH: Final = re.compile(r"^/cam(\d{1,6})$")
_TRACK: Final = re.compile(r"/trackID=\d+$")
_DIGEST_PARAM: Final = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]+))')
_STATUS: Final = {
    200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
    453: "Not Enough Bandwidth", 454: "Session Not Found", 455: "Method Not Valid in This State",
    461: "Unsupported Transport",
}
_METHODS: Final = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"


# --- the clip: encoded once, cached ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """What to encode. ``source``: a video file whose frames are cropped to the aspect and upscaled (None: textured
    synthetic frames); ``grain``: the standard deviation of the sensor noise added (grey levels)."""

    width: int = 1920
    height: int = 1080
    fps: int = 10
    seconds: float = 4.0
    gop_s: float = 2.0
    crf: int = 23
    preset: str = "veryfast"
    grain: float = 3.0
    source: str | None = None

    def key(self) -> str:
        data: dict[str, Any] = asdict(self)
        if self.source is not None:
            st = Path(self.source).stat()
            data["source"] = [str(Path(self.source).resolve()), st.st_size, int(st.st_mtime)]
        data["format"] = 1  # bump when the encoding code changes what it writes
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def frame_count(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def gop(self) -> int:
        return max(1, round(self.gop_s * self.fps))


def cache_dir() -> Path:
    """VMS_SIM_CACHE, else <tmp>/vms-rtsp-replay."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "vms-rtsp-replay")


def _source_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """BGR frames of the clip's size, ``frame_count`` of them, at the clip's fps."""
    import cv2

    rng = np.random.default_rng(7)
    w, h = spec.width, spec.height
    if spec.source is not None:
        import av

        with av.open(spec.source) as container:
            stream = container.streams.video[0]
            src_fps = float(stream.average_rate or spec.fps)
            decoded = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        if not decoded:
            raise ValueError(f"no video frame in {spec.source}")
        sh, sw = decoded[0].shape[:2]
        # Crop to the target aspect ratio (centre), then scale: no stretched people.
        if sw * h > sh * w:
            cw, ch = sh * w // h, sh
        else:
            cw, ch = sw, sw * h // w
        x0, y0 = (sw - cw) // 2, (sh - ch) // 2
        for i in range(spec.frame_count):
            crop = decoded[int(i * src_fps / spec.fps) % len(decoded)][y0:y0 + ch, x0:x0 + cw]
            yield _grain(cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC), spec.grain, rng)
    else:
        base: np.ndarray = cv2.resize(rng.integers(40, 200, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8), (w, h),
                          interpolation=cv2.INTER_LINEAR)
        cv2.putText(base, "vms replay", (w // 20, h // 8), cv2.FONT_HERSHEY_SIMPLEX, h / 400, (250, 250, 250),
                    max(1, h // 200))
        for i in range(spec.frame_count):
            img: np.ndarray = base.copy()
            for k in range(4):  # "people" walking across
                x = int((i * (3 + k) * w / 300 + k * w / 4) % w)
                y = h // 3 + k * h // 8
                cv2.rectangle(img, (x, y), (x + w // 40, y + h // 6), (30 + 50 * k, 60, 160 - 30 * k), -1)
            yield _grain(img, spec.grain, rng)


def _grain(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return img
    noise = rng.normal(0.0, sigma, img.shape[:2]).astype(np.int16)[..., None]  # luminance grain
    out: np.ndarray = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return out


def encode_clip(spec: ClipSpec, directory: Path | None = None) -> tuple[Path, Path]:
    """The clip's Annex-B file and its index (JSON: fps, size, [offset, length, keyframe] per frame), encoded once
    per parameter set and reused; written atomically (a temporary name, then renamed)."""
    import av

    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    key = spec.key()
    data_path, index_path = directory / f"{key}.h264", directory / f"{key}.json"
    if data_path.exists() and index_path.exists():
        return data_path, index_path
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = spec.width, spec.height, "yuv420p"
    cc.time_base = Fraction(1, spec.fps)
    cc.framerate = Fraction(spec.fps, 1)
    cc.gop_size = spec.gop
    cc.options = {"preset": spec.preset, "crf": str(spec.crf), "bf": "0", "keyint_min": str(spec.gop),
                  "sc_threshold": "0", "x264-params": "repeat-headers=1:scenecut=0"}
    chunks: list[bytes] = []
    index: list[tuple[int, int, bool]] = []
    offset = 0

    def take(packets: Any) -> None:
        nonlocal offset
        for p in packets:
            raw = bytes(p)
            chunks.append(raw)
            index.append((offset, len(raw), bool(p.is_keyframe)))
            offset += len(raw)

    for i, img in enumerate(_source_frames(spec)):
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = i
        take(cc.encode(frame))
    take(cc.encode(None))
    if not index or not index[0][2]:
        raise RuntimeError("the encoder's first frame is not a keyframe")
    tag = f".{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp_data, tmp_index = directory / (data_path.name + tag), directory / (index_path.name + tag)
    tmp_data.write_bytes(b"".join(chunks))
    tmp_index.write_text(json.dumps({"fps": spec.fps, "width": spec.width, "height": spec.height,
                                     "frames": index}), encoding="utf-8")
    os.replace(tmp_data, data_path)
    os.replace(tmp_index, index_path)  # the index last: its presence says the pair is complete
    return data_path, index_path


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte string (3- or 4-byte start codes)."""
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        nal = data[start:len(data) if j < 0 else j].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        i = j
    return nals


def rtp_payloads(nals: Sequence[bytes], max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RFC 6184 payloads of one access unit: a single NAL unit packet when it fits, else FU-A fragments."""
    out: list[bytes] = []
    for nal in nals:
        if len(nal) <= max_payload:
            out.append(nal)
            continue
        header = nal[0]
        indicator = bytes([(header & 0xE0) | 28])
        kind = header & 0x1F
        body = memoryview(nal)[1:]
        step = max_payload - 2
        for pos in range(0, len(body), step):
            flags = (0x80 if pos == 0 else 0) | (0x40 if pos + step >= len(body) else 0)
            out.append(indicator + bytes([flags | kind]) + body[pos:pos + step])
    return out


@dataclass(frozen=True, slots=True)
class ClipFrame:
    """One access unit as interleaved RTP packets with zero sequence number, timestamp and SSRC (patched per send)."""

    template: bytes
    offsets: tuple[int, ...]  # where each packet's '$' starts
    keyframe: bool

    def render(self, channel: int, seq: int, timestamp: int, ssrc: int) -> bytearray:
        buf = bytearray(self.template)
        pack = struct.pack_into
        for k, off in enumerate(self.offsets):
            buf[off + 1] = channel
            pack("!HII", buf, off + 6, (seq + k) & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        return buf


def _frame_of(payloads: Sequence[bytes], keyframe: bool) -> ClipFrame:
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    for k, payload in enumerate(payloads):
        marker = 0x80 if k == len(payloads) - 1 else 0
        head = struct.pack("!cBHBBHII", b"$", 0, 12 + len(payload), 0x80, marker | PAYLOAD_TYPE, 0, 0, 0)
        offsets.append(pos)
        parts += (head, payload)
        pos += len(head) + len(payload)
    return ClipFrame(b"".join(parts), tuple(offsets), keyframe)


@dataclass(frozen=True, slots=True)
class Clip:
    """A packetised clip, ready to serve. ``frames[k]`` for ``k`` in ``keyframes`` start with SPS, PPS, IDR."""

    width: int
    height: int
    fps: int
    sps: bytes
    pps: bytes
    frames: tuple[ClipFrame, ...]
    keyframes: tuple[int, ...]
    garbage: tuple[ClipFrame, ...] = field(repr=False)

    @classmethod
    def load(cls, spec: ClipSpec = ClipSpec(), directory: Path | None = None) -> Clip:
        data_path, index_path = encode_clip(spec, directory)
        meta = json.loads(index_path.read_text(encoding="utf-8"))
        data = data_path.read_bytes()
        sps = pps = b""
        frames: list[ClipFrame] = []
        for offset, length, key in meta["frames"]:
            nals = [n for n in split_annexb(data[offset:offset + length]) if n[0] & 0x1F not in (6, 9)]  # no SEI/AUD
            for n in nals:
                if n[0] & 0x1F == 7 and not sps:
                    sps = n
                elif n[0] & 0x1F == 8 and not pps:
                    pps = n
            if key and not any(n[0] & 0x1F == 7 for n in nals):
                nals = [sps, pps, *nals]
            frames.append(_frame_of(rtp_payloads(nals), bool(key)))
        if not sps or not pps:
            raise RuntimeError("the clip has no SPS/PPS")
        rng = np.random.default_rng(11)
        garbage = tuple(_frame_of([rng.integers(0, 256, MAX_PAYLOAD, dtype=np.uint8).tobytes() for _ in range(3)],
                                  False) for _ in range(8))
        keyframes = tuple(i for i, f in enumerate(frames) if f.keyframe)
        return cls(int(meta["width"]), int(meta["height"]), int(meta["fps"]), sps, pps, tuple(frames), keyframes,
                   garbage)

    def sdp(self, host: str, session_id: int) -> str:
        sprop = ",".join(base64.b64encode(x).decode() for x in (self.sps, self.pps))
        return "\r\n".join([
            "v=0",
            f"o=- {session_id} 1 IN IP4 {host}",
            "s=vms replay",
            f"c=IN IP4 {host}",
            "t=0 0",
            "a=control:*",
            "a=range:npt=0-",
            f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
            f"a=rtpmap:{PAYLOAD_TYPE} H264/{RTP_CLOCK}",
            f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={self.sps[1:4].hex().upper()};"
            f"sprop-parameter-sets={sprop}",
            f"a=framesize:{PAYLOAD_TYPE} {self.width}-{self.height}",
            f"a=x-dimensions:{self.width},{self.height}",
            f"a=framerate:{self.fps}",
            "a=control:trackID=1",
            "",
        ])


# --- the server ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayStats:
    connections: int = 0
    sessions: int = 0  # PLAYs that started sending
    frames_sent: int = 0
    bytes_sent: int = 0
    playing: int = 0  # sessions sending now


@dataclass(slots=True)
class _Request:
    method: str
    uri: str
    headers: dict[str, str]


class ReplayServer:
    """Serves ``clip`` on every address of ``hosts`` at one common port (0: a free one), paths ``/cam<N>``.

    ``faults``: mode by ``/camN``, by host or by ``host/camN`` (see the module text). ``username``/``password``:
    Digest authentication when both are given."""

    def __init__(
        self,
        clip: Clip,
        *,
        hosts: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        faults: Mapping[str, str] | None = None,
        slow_delay_s: float = 2.0,
        max_sessions: int | None = None,
    ) -> None:
        bad = sorted({m for m in (faults or {}).values() if m not in FAULT_MODES})
        if bad:
            raise ValueError(f"unknown fault mode(s) {', '.join(bad)}: choose from {', '.join(FAULT_MODES)}")
        if not hosts or any(not h.startswith("127.") for h in hosts):
            raise ValueError("hosts must be loopback addresses")
        self.clip = clip
        self.hosts = tuple(hosts)
        self._wanted_port = port
        self.port = 0
        self._credential = (username, password) if username is not None and password is not None else None
        self._realm = "IP Camera(replay)"
        self._nonce = secrets.token_hex(16)
        self.faults = dict(faults or {})
        self.slow_delay_s = slow_delay_s
        self.max_sessions = max_sessions
        self.stats = ReplayStats()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._set_up: dict[str, int] = {}
        self._session_counter = 0

    def url(self, host: str | None = None, path: str = "/cam0") -> str:
        return f"rtsp://{host or self.hosts[0]}:{self.port}{path}"

    def fault_of(self, host: str, path: str) -> str | None:
        return self.faults.get(f"{host}{path}") or self.faults.get(path) or self.faults.get(host)

    async def start(self) -> None:
        from probes.sim.onvif_server import raise_fd_limit

        raise_fd_limit()
        socks = _bind_all(self.hosts, self._wanted_port)
        self.port = socks[0].getsockname()[1]
        try:
            for sock in socks:
                self._servers.append(await asyncio.start_server(self._client, sock=sock, limit=_MAX_REQUEST))
        except BaseException:
            for sock in socks:
                sock.close()
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- one connection ---------------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self._writers.add(writer)
        host = writer.get_extra_info("sockname")[0]
        conn = _Connection(self, host, writer)
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":  # the client's interleaved RTCP: read and drop
                    head = await reader.readexactly(3)
                    await reader.readexactly(int.from_bytes(head[1:3], "big"))
                    continue
                raw = first + await reader.readuntil(b"\r\n\r\n")
                request = _parse(raw)
                if request is None:
                    writer.write(b"RTSP/1.0 400 Bad Request\r\n\r\n")
                    break
                length = int(request.headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(min(length, _MAX_REQUEST))
                await conn.handle(request)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            conn.close()
            self._writers.discard(writer)
            writer.close()

    def _authorized(self, request: _Request) -> bool:
        if self._credential is None:
            return True
        value = request.headers.get("authorization", "")
        if value[:7].lower() != "digest ":
            return False
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _DIGEST_PARAM.finditer(value[7:])}
        user, password = self._credential
        if params.get("username") != user or params.get("nonce") != self._nonce:
            return False
        ha1 = _md5(f"{user}:{self._realm}:{password}")
        ha2 = _md5(f"{request.method}:{params.get('uri', '')}")
        qop = params.get("qop")
        if qop:
            expected = _md5(f"{ha1}:{self._nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:{qop}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{self._nonce}:{ha2}")
        return hmac.compare_digest(params.get("response", ""), expected)

    def _challenge(self) -> str:
        return f'Digest realm="{self._realm}", nonce="{self._nonce}", qop="auth", algorithm=MD5'


class _Connection:
    def __init__(self, server: ReplayServer, host: str, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.host = host
        self.writer = writer
        self.session: str | None = None
        self.path: str | None = None
        self.channel = 0
        self.task: asyncio.Task[None] | None = None

    def close(self) -> None:
        self._stop_sending()
        if self.session is not None:
            self.server._set_up[self.host] -= 1
            self.session = None

    def _stop_sending(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def handle(self, request: _Request) -> None:
        server = self.server
        path = _TRACK.sub("", _path_of(request.uri))
        fault = server.fault_of(self.host, path)
        if fault == "slow":
            await asyncio.sleep(server.slow_delay_s)
        cseq = request.headers.get("cseq", "0")
        method = request.method
        if method == "OPTIONS":
            self._reply(200, cseq, {"Public": _METHODS})
            return
        if method in ("GET_PARAMETER", "SET_PARAMETER"):
            self._reply(200, cseq)
            return
        if method == "TEARDOWN":
            self._reply(200, cseq)
            self.close()
            return
        if method not in ("DESCRIBE", "SETUP", "PLAY", "PAUSE"):
            self._reply(405, cseq, {"Allow": _METHODS})
            return
        if not _PATH.match(path):
            self._reply(404, cseq)
            return
        if not server._authorized(request):
            self._reply(401, cseq, {"WWW-Authenticate": server._challenge()})
            return
        if fault == "busy":
            self._reply(453, cseq)
            return
        if method == "DESCRIBE":
            server._session_counter += 1
            sdp = server.clip.sdp(self.host, server._session_counter).encode()
            base = f"rtsp://{self.host}:{server.port}{path}/"
            self._reply(200, cseq, {"Content-Base": base, "Content-Type": "application/sdp"}, sdp)
        elif method == "SETUP":
            self._setup(request, cseq, path)
        elif method == "PLAY":
            self._play(request, cseq, path, fault)
        else:  # PAUSE
            self._stop_sending()
            self._reply(200, cseq, {"Session": self.session or ""})

    def _setup(self, request: _Request, cseq: str, path: str) -> None:
        transport = request.headers.get("transport", "")
        tcp = next((t for t in transport.split(",") if "/TCP" in t.upper()), None)
        if tcp is None:
            self._reply(461, cseq)
            return
        match = re.search(r"interleaved=(\d+)(?:-(\d+))?", tcp)
        channel = int(match.group(1)) if match else 0
        if self.session is None:
            server = self.server
            taken = server._set_up.get(self.host, 0)
            if server.max_sessions is not None and taken >= server.max_sessions:
                self._reply(453, cseq)
                return
            server._set_up[self.host] = taken + 1
            self.session = secrets.token_hex(8)
        self.path = path
        self.channel = channel
        self._reply(200, cseq, {
            "Transport": f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1};ssrc={0:08X};mode=play",
            "Session": f"{self.session};timeout=60",
        })

    def _play(self, request: _Request, cseq: str, path: str, fault: str | None) -> None:
        session = request.headers.get("session", "").split(";")[0].strip()
        if self.session is None or session != self.session:
            self._reply(454, cseq)
            return
        clip = self.server.clip
        seq = secrets.randbelow(0x10000)
        timestamp = secrets.randbelow(0x100000000)
        uri = f"rtsp://{self.host}:{self.server.port}{path}/trackID=1"
        self._reply(200, cseq, {"Session": self.session, "Range": "npt=0.000-",
                                "RTP-Info": f"url={uri};seq={seq};rtptime={timestamp}"})
        if fault == "silent" or self.task is not None:
            return
        stats = self.server.stats
        stats.sessions += 1
        frames = clip.garbage if fault == "garbage" else clip.frames
        start = 0 if fault == "garbage" else clip.keyframes[stats.sessions % len(clip.keyframes)]
        self.task = asyncio.create_task(self._send(frames, start, seq, timestamp))
        self.server._tasks.add(self.task)
        self.task.add_done_callback(self.server._tasks.discard)

    async def _send(self, frames: Sequence[ClipFrame], index: int, seq: int, timestamp: int) -> None:
        loop = asyncio.get_running_loop()
        stats = self.server.stats
        fps = self.server.clip.fps
        step = RTP_CLOCK // fps
        ssrc = secrets.randbits(32)
        t0 = loop.time()
        sent = 0
        stats.playing += 1
        try:
            while True:
                frame = frames[index]
                data = frame.render(self.channel, seq, timestamp, ssrc)
                self.writer.write(data)
                stats.frames_sent += 1
                stats.bytes_sent += len(data)
                seq += len(frame.offsets)
                timestamp += step
                index = (index + 1) % len(frames)
                sent += 1
                await self.writer.drain()
                delay = t0 + sent / fps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            stats.playing -= 1

    def _reply(self, status: int, cseq: str, headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        lines = [f"RTSP/1.0 {status} {_STATUS.get(status, 'Error')}", f"CSeq: {cseq}", "Server: vms-replay/1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def _parse(raw: bytes) -> _Request | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("RTSP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return _Request(parts[0].upper(), parts[1], headers)


def _path_of(uri: str) -> str:
    if "://" in uri:
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        uri = rest[slash:] if slash >= 0 else "/"
    return uri.split("?", 1)[0].rstrip("/") or "/"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _bind_all(hosts: Sequence[str], wanted: int, attempts: int = 20) -> list[socket.socket]:
    """A listening socket per address on one common port; port 0 picks one free for all, retrying clashes."""
    return listen_on_all(hosts, wanted, attempts=attempts, backlog=1024, what="the replay devices")


def device_hosts(count: int, base_host: str = DEFAULT_BASE_HOST) -> list[str]:
    """``count`` loopback addresses from ``base_host`` (the fleet's numbering: 127.x.y.z, never .0 or .255)."""
    from probes.sim.devices import device_host

    return [device_host(base_host, i) for i in range(count)]


# --- in another process ---------------------------------------------------------------------------------------


@dataclass
class ReplayProcess:
    """A replay server in a spawned child process. ``stats()`` includes the child's CPU seconds (``cpu_s``)."""

    hosts: tuple[str, ...]
    port: int
    _proc: Any = field(repr=False)
    _conn: Connection = field(repr=False)

    def url(self, host: str | None = None, path: str = "/cam0") -> str:
        return f"rtsp://{host or self.hosts[0]}:{self.port}{path}"

    def stats(self, timeout: float = 10.0) -> dict[str, float]:
        self._conn.send("stats")
        if not self._conn.poll(timeout):
            raise TimeoutError("the replay process did not answer")
        answer: dict[str, float] = self._conn.recv()
        return answer

    def stop(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):
            self._conn.send("stop")
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout)
        self._conn.close()

    def __enter__(self) -> ReplayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_replay_process(
    spec: ClipSpec,
    hosts: Sequence[str],
    *,
    port: int = 0,
    directory: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    faults: Mapping[str, str] | None = None,
    slow_delay_s: float = 2.0,
    max_sessions: int | None = None,
    startup_timeout_s: float = 300.0,
) -> ReplayProcess:
    """Start a :class:`ReplayServer` in a spawned process (the clip encoded there when not cached yet) and wait,
    bounded, until it listens."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    config = {"spec": asdict(spec), "hosts": list(hosts), "port": port,
              "directory": None if directory is None else str(directory), "username": username,
              "password": password, "faults": dict(faults or {}), "slow_delay_s": slow_delay_s,
              "max_sessions": max_sessions}
    proc = ctx.Process(target=_child_main, args=(child, config), daemon=True, name="rtsp-replay")
    proc.start()
    child.close()
    try:
        if not parent.poll(startup_timeout_s):
            raise TimeoutError(f"the replay process did not start in {startup_timeout_s:g} s")
        kind, value = parent.recv()
    except EOFError:
        proc.join(5)
        parent.close()
        raise RuntimeError(f"the replay process exited before it listened (exit code {proc.exitcode})") from None
    except BaseException:
        proc.kill()
        proc.join(5)
        parent.close()
        raise
    if kind != "ready":
        proc.join(5)
        parent.close()
        raise RuntimeError(f"the replay process failed: {value}")
    return ReplayProcess(tuple(hosts), int(value), proc, parent)


def _child_main(conn: Connection, config: dict[str, Any]) -> None:
    try:
        asyncio.run(_child_serve(conn, config))
    except Exception as exc:  # reported to the parent, which raises it
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _child_serve(conn: Connection, config: dict[str, Any]) -> None:
    directory = Path(config["directory"]) if config["directory"] else None
    clip = Clip.load(ClipSpec(**config["spec"]), directory)
    server = ReplayServer(clip, hosts=config["hosts"], port=config["port"], username=config["username"],
                          password=config["password"], faults=config["faults"],
                          slow_delay_s=config["slow_delay_s"], max_sessions=config["max_sessions"])
    await server.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            done.set()
            return
        if message == "stats":
            st = server.stats
            cpu = time.process_time()
            conn.send({"cpu_s": cpu, "connections": st.connections, "sessions": st.sessions,
                       "frames_sent": st.frames_sent, "bytes_sent": st.bytes_sent, "playing": st.playing,
                       "rss_mb": _rss_mb()})
        else:
            done.set()

    loop.add_reader(conn.fileno(), on_message)
    conn.send(("ready", server.port))
    try:
        await done.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await server.stop()


def _rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- command line -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.sim.rtsp_replay",
                                     description="Serve a pre-encoded H.264 clip over RTSP from many loopback "
                                                 "addresses (paths /cam<N>).")
    parser.add_argument("--count", type=int, default=1, help="device addresses (default 1)")
    parser.add_argument("--base-host", default=DEFAULT_BASE_HOST)
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes")
    parser.add_argument("--source", help="a video file to crop, upscale and encode (default: synthetic frames)")
    parser.add_argument("--user")
    parser.add_argument("--password", help="with --user: Digest authentication")
    parser.add_argument("--fault", action="append", default=[], metavar="KEY=MODE",
                        help=f"KEY: /camN, a host or host/camN; MODE: {', '.join(FAULT_MODES)}")
    parser.add_argument("--max-sessions", type=int, help="sessions per host at once (then 453)")
    args = parser.parse_args(argv)
    faults: dict[str, str] = {}
    for item in args.fault:
        key, sep, mode = item.partition("=")
        if not sep or mode not in FAULT_MODES:
            parser.error(f"bad --fault {item!r}: KEY=MODE with MODE one of {', '.join(FAULT_MODES)}")
        faults[key] = mode
    if args.source and not Path(args.source).is_file():
        parser.error(f"no such video file: {args.source}")
    try:
        hosts = device_hosts(args.count, args.base_host)
    except ValueError as exc:
        parser.error(str(exc))
    spec = ClipSpec(args.width, args.height, args.fps, args.seconds, args.gop, source=args.source)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    async def run() -> None:
        t0 = time.perf_counter()
        clip = Clip.load(spec)
        server = ReplayServer(clip, hosts=hosts, port=args.port, username=args.user, password=args.password,
                              faults=faults, max_sessions=args.max_sessions)
        await server.start()
        print(f"{len(hosts)} RTSP devices {hosts[0]} .. {hosts[-1]} port {server.port}, H.264 "
              f"{clip.width}x{clip.height} {clip.fps} fps, {len(clip.frames)} frames "
              f"(ready in {time.perf_counter() - t0:.1f} s); e.g. {server.url()}  (Ctrl-C stops)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
