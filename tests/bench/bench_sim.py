"""Benchmark of the simulated ONVIF fleet: keep-alive request rate and a 10,000-device start. Prints figures only.

- GetSystemDateAndTime over keep-alive connections, the fleet in its own process, a raw asyncio client here;
  the fleet process's CPU time per request gives the server cost apart from the client's.
- The same with aiohttp's low-level server in front of the same handler (the alternative that was measured).
- 10,000 devices: start time, RSS and descriptors of the fleet process (HTTP + WS-Discovery), then one sweep
  of GetSystemDateAndTime over all devices with a new connection each; then the RTSP child with 10,000 listeners.

Run: .venv/bin/python -m pytest -q -s tests/bench/bench_sim.py   (or .venv/bin/python -m tests.bench.bench_sim)
Sizes: VMS_BENCH_SIM_DEVICES (default 10000), VMS_BENCH_SIM_SECONDS (default 4).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from tests.bench.report import quick, record, size

DEVICES = size("VMS_BENCH_SIM_DEVICES", 10_000, 200)
SECONDS = float(os.environ.get("VMS_BENCH_SIM_SECONDS") or (1 if quick() else 4))
BASE_HOST = os.environ.get("VMS_BENCH_SIM_BASE", "127.3.0.1")
GSDT = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)
REQUEST = (
    b"POST /onvif/device_service HTTP/1.1\r\nHost: cam\r\nContent-Type: application/soap+xml; charset=utf-8\r\n"
    b"Content-Length: %d\r\n\r\n" % len(GSDT) + GSDT
)


def _proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- fleet processes ---------------------------------------------------------------------------------------------


def _serve_fleet(conn: Connection, count: int, kind: str, discovery: bool) -> None:
    async def main() -> None:
        from probes.sim.fleet import SimFleet

        fleet = SimFleet(count, base_host=BASE_HOST, port=0, rtsp=False, discovery=discovery, fault_mix={})
        t0 = time.perf_counter()
        await fleet.start()
        started = time.perf_counter() - t0
        stop_aiohttp = None
        if kind == "aiohttp":
            stop_aiohttp = await _swap_in_aiohttp(fleet)
        conn.send(
            {
                "port": fleet.port,
                "hosts": [d.host for d in fleet.devices],
                "start_s": started,
                "unicast": len(fleet.discovery.unicast_hosts) if fleet.discovery else 0,
            }
        )
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        if stop_aiohttp is not None:
            await stop_aiohttp()
        await fleet.stop()

    asyncio.run(main())


async def _swap_in_aiohttp(fleet: Any) -> Any:
    """Replace the fleet's listeners by aiohttp low-level servers around the same request handler."""
    import socket

    from aiohttp import web

    server = fleet.server
    for listener in server._listeners:
        listener.close()
    server._listeners.clear()
    by_host = {d.host: server.runtime(d.index) for d in fleet.devices}

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        host = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        rt = by_host[host]
        headers = {k.lower(): v for k, v in request.headers.items()}
        resp = server.handle(rt, request.method, request.path_qs, headers, await request.read())
        out = web.Response(status=resp.status, body=resp.body)
        out.headers["Content-Type"] = resp.content_type.decode()
        return out

    lowlevel = web.Server(handler)
    loop = asyncio.get_running_loop()
    servers = []
    for d in fleet.devices:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((d.host, d.port))
        sock.listen(64)
        sock.setblocking(False)
        servers.append(await loop.create_server(lowlevel, sock=sock))

    async def stop() -> None:
        for s in servers:
            s.close()
        await lowlevel.shutdown(1.0)

    return stop


class _Client(asyncio.Protocol):
    """Minimal keep-alive client: one request in flight, counts complete responses."""

    def __init__(self, done: asyncio.Future[None], deadline: float) -> None:
        self.buf = bytearray()
        self.count = 0
        self.done = done
        self.deadline = deadline
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            i = self.buf.find(b"Content-Length: ", 0, end)
            length = int(self.buf[i + 16 : self.buf.find(b"\r\n", i)])
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self.count += 1
            assert self.transport is not None
            if time.monotonic() >= self.deadline:
                self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)
                return
            self.transport.write(REQUEST)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _keepalive_load(hosts: list[str], port: int, connections: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + seconds
    clients = []
    for i in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        _t, proto = await loop.create_connection(
            lambda d=done: _Client(d, deadline),  # type: ignore[misc]
            hosts[i % len(hosts)],
            port,
        )
        clients.append(proto)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), seconds + 10)
    return sum(c.count for c in clients)


async def _sweep(hosts: list[str], port: int, concurrency: int = 200) -> tuple[int, float]:
    """One GetSystemDateAndTime per device, a new connection each (a scanner's first contact)."""
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(host: str) -> None:
        nonlocal ok
        async with sem:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            try:
                writer.write(REQUEST.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
                data = await asyncio.wait_for(reader.read(), 5)
                ok += data.startswith(b"HTTP/1.1 200")
            finally:
                writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(h) for h in hosts))
    return ok, time.perf_counter() - t0


def _start_fleet_process(count: int, kind: str, discovery: bool) -> tuple[Any, Connection, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_fleet, args=(child, count, kind, discovery), daemon=True)
    proc.start()
    if not parent.poll(600):
        proc.kill()
        raise RuntimeError("fleet process did not start")
    info: dict[str, Any] = parent.recv()
    return proc, parent, info


def _stop_fleet_process(proc: Any, conn: Connection) -> None:
    conn.send("stop")
    proc.join(60)
    if proc.is_alive():
        proc.kill()


def bench_keepalive(kind: str, connections: int = 50, devices: int = 100) -> dict[str, float]:
    proc, conn, info = _start_fleet_process(devices, kind, discovery=False)
    try:
        runs = []
        for _ in range(3):
            cpu0, _ = _proc_stat(proc.pid)
            t0 = time.perf_counter()
            n = asyncio.run(_keepalive_load(info["hosts"], info["port"], connections, SECONDS))
            wall = time.perf_counter() - t0
            cpu1, rss = _proc_stat(proc.pid)
            runs.append((n / wall, (cpu1 - cpu0) / n * 1e6, rss))
        rps = statistics.median(r[0] for r in runs)
        cpu_us = statistics.median(r[1] for r in runs)
        return {"rps": rps, "server_cpu_us": cpu_us, "server_capacity_rps": 1e6 / cpu_us, "rss_mb": runs[-1][2] / 2**20}
    finally:
        _stop_fleet_process(proc, conn)


def bench_large_fleet(count: int = DEVICES) -> dict[str, float]:
    t0 = time.perf_counter()
    proc, conn, info = _start_fleet_process(count, "asyncio", discovery=True)
    spawn_and_start = time.perf_counter() - t0
    try:
        _cpu, rss = _proc_stat(proc.pid)
        fds = _fd_count(proc.pid)
        ok, sweep_s = asyncio.run(_sweep(info["hosts"], info["port"]))
        _cpu, rss_after = _proc_stat(proc.pid)
        return {
            "devices": count,
            "start_s": info["start_s"],
            "spawn_and_start_s": spawn_and_start,
            "rss_mb": rss / 2**20,
            "fds": fds,
            "unicast_discovery": info["unicast"],
            "sweep_ok": ok,
            "sweep_s": sweep_s,
            "rss_after_sweep_mb": rss_after / 2**20,
        }
    finally:
        _stop_fleet_process(proc, conn)


def bench_rtsp_listeners(count: int = DEVICES) -> dict[str, float]:
    from probes.sim.devices import device_host
    from probes.sim.rtsp import start_rtsp_server

    hosts = [device_host(BASE_HOST, i) for i in range(count)]
    t0 = time.perf_counter()
    server = start_rtsp_server(8, device_hosts=hosts, startup_timeout_s=300)
    started = time.perf_counter() - t0
    try:
        _cpu, rss = _proc_stat(server._proc.pid)
        return {"rtsp_start_s": started, "rtsp_rss_mb": rss / 2**20, "rtsp_device_listeners": server.device_hosts}
    finally:
        server.stop()


def test_bench_sim() -> None:
    rates: dict[str, float] = {}
    for kind in ("asyncio", "aiohttp"):
        r = bench_keepalive(kind)
        rates[kind] = r["server_capacity_rps"]
        print(
            f"\nGetSystemDateAndTime keep-alive, 50 connections, {kind} server: {r['rps']:.0f} req/s end to end; "
            f"server CPU {r['server_cpu_us']:.0f} us/request (~{r['server_capacity_rps']:.0f} req/s per core); "
            f"fleet RSS {r['rss_mb']:.0f} MiB"
        )
    record("simulator: GetSystemDateAndTime per core (server CPU)", rates["asyncio"], "req/s",
           baseline=rates["aiohttp"], baseline_name="aiohttp low-level server", group="sim")
    big = bench_large_fleet()
    print(
        f"{big['devices']:.0f}-device fleet: start {big['start_s']:.2f} s (with process spawn "
        f"{big['spawn_and_start_s']:.2f} s), RSS {big['rss_mb']:.0f} MiB, {big['fds']:.0f} fds "
        f"({big['unicast_discovery']:.0f} unicast discovery sockets); sweep of one GetSystemDateAndTime per device "
        f"(new connection each): {big['sweep_ok']:.0f} ok in {big['sweep_s']:.2f} s "
        f"({big['sweep_ok'] / big['sweep_s']:.0f} devices/s), RSS after {big['rss_after_sweep_mb']:.0f} MiB"
    )
    record(f"simulator: start {big['devices']:,.0f} devices (HTTP + WS-Discovery)", big["start_s"], "s",
           peak_mb=big["rss_after_sweep_mb"], group="sim")
    record(f"simulator: sweep of {big['devices']:,.0f} devices, a connection each", big["sweep_ok"] / big["sweep_s"],
           "devices/s", group="sim")
    rt = bench_rtsp_listeners()
    print(
        f"RTSP child with {rt['rtsp_device_listeners']:.0f} device-address listeners: start {rt['rtsp_start_s']:.2f} s,"
        f" RSS {rt['rtsp_rss_mb']:.0f} MiB"
    )
    record(f"simulator: RTSP child, {rt['rtsp_device_listeners']:,.0f} listeners, start", rt["rtsp_start_s"], "s",
           peak_mb=rt["rtsp_rss_mb"], group="sim")


if __name__ == "__main__":
    test_bench_sim()
