# mypy: ignore-errors
# ruff: noqa: E402
"""RTSP server for the simulated fleet, run under Debian's /usr/bin/python3 (its `gi` has gst-rtsp-server).

Usage: /usr/bin/python3 rtsp_server_gst.py [--config CONFIG.json] [--port N] [--mounts N] [--video PATH]
CONFIG (what probes/sim/rtsp.py writes): {"address": "127.0.0.1", "port": 0, "mounts": ["/cam0", ...],
         "video": null | "/path.mp4", "hosts": ["127.1.0.1", ...], "width": 320, "height": 240, "fps": 10}
Prints one line `READY <port> <listening-device-hosts>` on stdout when serving; exits when stdin closes (parent gone).

Device addresses: gst-rtsp-server binds one address, so this script also listens on every device address at the
same port and hands accepted sockets to the server (`transfer_connection`). A client that rewrites a stream URI to
the address that answered ONVIF (DOMAIN.md 7.4) therefore reaches a real RTSP server there.
"""

import argparse
import json
import os
import signal
import socket
import stat
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtspServer

PATTERNS = ("smpte", "ball", "pinwheel", "gamut", "spokes", "colors", "circular", "checkers-8")


def launch_line(index: int, cfg: dict) -> str:
    w, h, fps = int(cfg["width"]), int(cfg["height"]), int(cfg["fps"])
    # 1 s GOP: a client joining mid-stream waits at most a second for a keyframe (field notes: ~1.2 s at 2 s GOP)
    enc = (
        f"x264enc tune=zerolatency speed-preset=ultrafast bitrate=384 key-int-max={fps} "
        "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    caps = f"video/x-raw,width={w},height={h},framerate={fps}/1"
    if cfg.get("video"):
        src = (
            f"filesrc location=\"{cfg['video']}\" ! decodebin ! videoconvert ! videoscale ! videorate ! {caps}"
        )
    else:
        pattern = PATTERNS[index % len(PATTERNS)]
        # horizontal-speed scrolls the pattern so a freeze detector sees a live picture
        src = f"videotestsrc is-live=true pattern={pattern} horizontal-speed=2 ! {caps}"
    return f"( {src} ! videoconvert ! {enc} )"


def load_config(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON configuration (overrides the other options)")
    parser.add_argument("--port", type=int, default=0, help="RTSP port on 127.0.0.1 (0: choose one)")
    parser.add_argument("--mounts", type=int, default=8, help="number of shared mounts /cam0../camN-1")
    parser.add_argument("--video", help="serve this video file instead of test patterns")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args(argv)
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            return json.load(fh)
    return {"address": "127.0.0.1", "port": args.port, "mounts": [f"/cam{i}" for i in range(args.mounts)],
            "video": args.video, "hosts": [], "width": args.width, "height": args.height, "fps": args.fps}


def main() -> int:
    cfg = load_config(sys.argv[1:])
    if not str(cfg.get("address", "127.0.0.1")).startswith("127."):
        print("ERROR the simulator's RTSP server binds loopback addresses only", flush=True)
        return 2
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(cfg.get("address", "127.0.0.1"))
    server.set_service(str(int(cfg.get("port") or 0)))
    mounts = server.get_mount_points()
    for i, path in enumerate(cfg["mounts"]):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(i, cfg))
        # Shared: every device pointing at this mount reuses one encoder (a file source is shared too,
        # so a second viewer joins the running picture instead of restarting the file). Unshared: a pipeline per
        # viewer, for tests whose few viewers come and go at once (gst-rtsp-server 1.22 can abort on a shared
        # media then: gst_rtsp_media_get_rates assertion).
        factory.set_shared(bool(cfg.get("shared", True)))
        mounts.add_factory(path, factory)
    if server.attach(None) == 0:
        print("ERROR attach failed", flush=True)
        return 2
    port = server.get_bound_port()

    listeners = []

    def on_accept(fd, _cond, sock):
        try:
            conn, peer = sock.accept()
        except OSError:
            return True
        gsock = Gio.Socket.new_from_fd(conn.detach())
        server.transfer_connection(gsock, peer[0], peer[1], None)
        return True

    for host in cfg.get("hosts", []):
        if not str(host).startswith("127."):
            continue  # loopback only
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            print(f"WARN cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
            sock.close()
            continue
        sock.listen(16)
        sock.setblocking(False)
        GLib.io_add_watch(sock.fileno(), GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN, on_accept, sock)
        listeners.append(sock)

    loop = GLib.MainLoop()

    def on_stdin(_fd, _cond):
        loop.quit()  # parent closed our stdin: it is gone or stopping us
        return False

    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):  # started by rtsp.py: its pipe is our lifeline
        GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IOCondition.HUP | GLib.IOCondition.IN,
                          on_stdin)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {port} {len(listeners)}", flush=True)
    loop.run()
    for sock in listeners:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
