"""Real RTSP for the simulated fleet: GStreamer's gst-rtsp-server in a child process under Debian's Python.

The venv's Python has no `gi`; Debian's /usr/bin/python3 does (field notes), so the server runs as
`rtsp_server_gst.py` there. A few shared mounts (`/cam0`..`/cam{N-1}`) serve many devices to save CPU.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("rtsp_server_gst.py")
DEFAULT_STARTUP_TIMEOUT_S = 20.0


class RtspUnavailable(RuntimeError):
    """The RTSP child could not start (no gst-rtsp-server, port clash, timeout)."""


@dataclass
class RtspServer:
    """A running RTSP child. `url_base` is rtsp://127.0.0.1:PORT; mounts are appended to it."""

    url_base: str
    port: int
    mounts: tuple[str, ...]
    device_hosts: int
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def url(self, mount: str) -> str:
        return self.url_base + mount

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._proc.returncode

    def stop(self, timeout_s: float = 5.0) -> None:
        proc = self._proc
        if proc.poll() is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child quits when its stdin closes
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, int]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    poller = select.poll()  # not select(): a 10,000-device parent holds descriptors far above 1024
    poller.register(fd, select.POLLIN | select.POLLHUP)
    buf = b""
    while time.monotonic() < deadline:
        ready = poller.poll(max(0.0, min(500.0, (deadline - time.monotonic()) * 1000)))
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n"):
            if line.startswith(b"READY "):
                _, port, hosts = line.decode().split()
                return int(port), int(hosts)
            if line.startswith(b"ERROR"):
                raise RtspUnavailable(line.decode())
    raise RtspUnavailable(f"RTSP server did not become ready (exit code {proc.poll()}, output {buf[-200:]!r})")


def _wait_accepting(host: str, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RtspUnavailable(f"RTSP port {host}:{port} never accepted a connection")


_PORT_ATTEMPTS = 5


def start_rtsp_server(
    mounts: int | Sequence[str],
    port: int | None = None,
    video: str | Path | None = None,
    *,
    device_hosts: Sequence[str] = (),
    width: int = 320,
    height: int = 240,
    fps: int = 10,
    shared: bool = True,
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
) -> RtspServer:
    """Start the RTSP child on 127.0.0.1 (port chosen at run time when None) and wait, bounded, until it serves.

    `mounts`: a count N (mounts /cam0../cam{N-1}) or explicit paths. `video`: serve this file (decoded and
    re-encoded to H.264) instead of test patterns. `device_hosts`: also accept RTSP on these loopback addresses.
    `shared`: one pipeline per mount for all viewers (cheap for many devices); False gives each viewer its own.
    """
    paths = tuple(f"/cam{i}" for i in range(mounts)) if isinstance(mounts, int) else tuple(mounts)
    if not paths or any(not p.startswith("/") for p in paths):
        raise ValueError("mounts must be a positive count or paths starting with '/'")
    if video is not None and not Path(video).is_file():
        raise ValueError(f"video file not found: {video}")
    if any(not h.startswith("127.") for h in device_hosts):
        raise ValueError("device_hosts must be loopback addresses")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise RtspUnavailable(f"{SYSTEM_PYTHON} not found (needs python3-gi and gir1.2-gst-rtsp-server-1.0)")
    cfg = {
        "address": "127.0.0.1",
        "port": port or 0,
        "mounts": list(paths),
        "video": str(Path(video).resolve()) if video is not None else None,
        "hosts": list(device_hosts),
        "width": width,
        "height": height,
        "fps": fps,
        "shared": shared,
    }
    fd, cfg_path = tempfile.mkstemp(prefix="vms-rtsp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh)
    deadline = time.monotonic() + startup_timeout_s
    wanted = len(set(device_hosts))
    try:
        # The port is chosen free on 127.0.0.1; on a device address it may be taken (another server there):
        # a port of our choosing is chosen again until every device address listens too.
        for attempt in range(1 if port else _PORT_ATTEMPTS):
            proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SCRIPT), "--config", cfg_path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env={**os.environ, "GST_DEBUG": os.environ.get("GST_DEBUG", "1")},
                start_new_session=True,  # Ctrl-C in a terminal reaches the parent, which stops the child in order
            )
            try:
                bound, hosts = _wait_ready(proc, deadline)
                _wait_accepting("127.0.0.1", bound, deadline)
            except BaseException:
                RtspServer("", 0, paths, 0, proc).stop(1.0)
                raise
            if hosts >= wanted or port or attempt == _PORT_ATTEMPTS - 1:
                break
            RtspServer("", 0, paths, 0, proc).stop(1.0)
    finally:
        Path(cfg_path).unlink(missing_ok=True)
    logger.info("RTSP server on 127.0.0.1:%d, %d shared mounts, also on %d device addresses", bound, len(paths), hosts)
    return RtspServer(f"rtsp://127.0.0.1:{bound}", bound, paths, hosts, proc)
