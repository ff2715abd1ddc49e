"""Benchmark: GB/T 28181 registrations and keepalives per second handled by our GbServer, driven by SIPp.

Load: SIPp (tests/data/sipp/register.xml, then keepalive.xml) as N devices at increasing call rates, over UDP; a
registration is REGISTER -> 401 -> REGISTER with MD5 digest -> 200, a keepalive one MESSAGE -> 200.
Ours: probes.gb28181.GbServer in its own process (an in-memory directory, as the vms one answers from memory).
Baseline, in the same run with the same load: SIPp itself as the platform (a C++ SIP stack; uas_register.xml checks
the digest with verifyauth, uas_message.xml answers 200), the "plain SIP stack" that runs here.
Figures: per rate, what each side got through (calls completed / wall time, failures) and its CPU per request from
/proc; the headline is requests per CPU-second of the server (a noisy, shared machine: CPU time, median of the
rates), and the ratio ours / baseline. Prints figures; never asserts on time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.bench.report import record, size, sizes
from tests.gb28181 import PASSWORD, SIPP_DIR, device_csv

DEVICES = size("VMS_BENCH_GB_DEVICES", 3000, 300)
RATES = sizes("VMS_BENCH_GB_RATES", "500,1000,2000,4000", "200,500")


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(conn: Any) -> None:
    """The server process: a GbServer on 127.0.0.1 (UDP, a free port) answering every 3713... ID with PASSWORD."""
    from tests.gb28181 import REALM, SERVER_ID, MemoryDirectory

    class Quiet(MemoryDirectory):  # counts only: no lists growing across the run
        def registered(self, event: Any) -> None:
            pass

        def keepalive(self, event: Any) -> None:
            pass

    async def main() -> None:
        from probes.gb28181 import GbServer

        server = GbServer(Quiet(), sip_id=SERVER_ID, realm=REALM, host="127.0.0.1", udp_port=0, tcp_port=None,
                          query_catalog_on_register=False)
        await server.start()
        conn.send(server.udp_port)
        loop = asyncio.get_running_loop()
        while True:
            if await loop.run_in_executor(None, conn.poll, 0.2):
                if conn.recv() == "stop":
                    break
                conn.send(dict(server.stats))
        await server.stop()

    asyncio.run(main())


def _sipp_client(port: int, scenario: str, csv: Path, calls: int, rate: int, cwd: Path) -> dict[str, float]:
    sipp = shutil.which("sipp")
    assert sipp
    cmd = [sipp, f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / scenario), "-inf", str(csv), "-t", "u1",
           "-i", "127.0.0.1", "-m", str(calls), "-r", str(rate), "-l", str(max(100, rate)), "-nd", "-nostdin",
           "-timeout", "60s", "-max_recv_loops", "5000", "-buff_size", "4194304"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return {"ok": float(ok[-1]) if ok else 0.0, "failed": float(failed[-1]) if failed else float(calls),
            "wall_s": wall}


def _baseline_uas(scenario: str, calls: int, cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    sipp = shutil.which("sipp")
    assert sipp
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sipp, "-sf", str(SIPP_DIR / scenario), "-i", "127.0.0.1", "-p", str(port), "-t", "u1",
                             "-m", str(calls), "-nd", "-nostdin", "-timeout", "90s", "-max_recv_loops", "5000",
                             "-buff_size", "4194304"],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def _ours(rates: Sequence[int], work: Path) -> list[dict[str, float]]:
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    rows = []
    try:
        assert parent.poll(30), "server did not start"
        port = int(parent.recv())
        assert proc.pid is not None
        for i, rate in enumerate(rates):
            ids = [f"3713110000132{i}{n:06d}" for n in range(DEVICES)]
            csv = device_csv(work / f"ours_{rate}.csv", ids, PASSWORD)
            row: dict[str, float] = {"rate": rate}
            for phase, scenario in (("reg", "register.xml"), ("ka", "keepalive.xml")):
                cpu0 = _cpu_of(proc.pid)
                r = _sipp_client(port, scenario, csv, DEVICES, rate, work)
                cpu = _cpu_of(proc.pid) - cpu0
                row |= {f"{phase}_ok": r["ok"], f"{phase}_failed": r["failed"], f"{phase}_wall_s": r["wall_s"],
                        f"{phase}_cpu_s": cpu}
            parent.send("stats")
            stats = parent.recv() if parent.poll(10) else {}
            row["server_register_ok"] = float(stats.get("register_ok", 0))
            row["server_keepalive"] = float(stats.get("keepalive", 0))
            rows.append(row)
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return rows


def _baseline(rates: Sequence[int], work: Path) -> list[dict[str, float]]:
    rows = []
    for i, rate in enumerate(rates):
        ids = [f"3713110000132{i}{n:06d}" for n in range(DEVICES)]
        csv = device_csv(work / f"base_{rate}.csv", ids, PASSWORD)
        row: dict[str, float] = {"rate": rate}
        for phase, client, server in (("reg", "register.xml", "uas_register.xml"),
                                      ("ka", "keepalive.xml", "uas_message.xml")):
            uas, port = _baseline_uas(server, DEVICES, work)
            try:
                cpu0 = _cpu_of(uas.pid)
                r = _sipp_client(port, client, csv, DEVICES, rate, work)
                cpu = _cpu_of(uas.pid) - cpu0
            finally:
                uas.kill()
                uas.wait(10)
            row |= {f"{phase}_ok": r["ok"], f"{phase}_failed": r["failed"], f"{phase}_wall_s": r["wall_s"],
                    f"{phase}_cpu_s": cpu}
        rows.append(row)
    return rows


def _per_cpu_s(rows: list[dict[str, float]], phase: str) -> float:
    """Median over the rates of completed requests per CPU-second of the server (0 when no CPU was seen)."""
    values = [r[f"{phase}_ok"] / r[f"{phase}_cpu_s"] for r in rows if r[f"{phase}_cpu_s"] > 0]
    return statistics.median(values) if values else 0.0


def test_bench_gb28181() -> None:
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed (Debian sip-tester)")
    with tempfile.TemporaryDirectory(prefix="vms-bench-gb-") as tmp:
        work = Path(tmp)
        ours = _ours(RATES, work)
        base = _baseline(RATES, work)
    print(f"\nGB/T 28181, {DEVICES:,} SIPp devices over UDP per rate; server CPU from /proc")
    print(" rate/s | side     | registrations ok/failed, got/s, CPU us each | keepalives ok/failed, got/s, CPU us each")
    for o, b in zip(ours, base, strict=True):
        for name, r in (("ours", o), ("SIPp UAS", b)):
            cells = []
            for phase in ("reg", "ka"):
                ok, failed, wall, cpu = (r[f"{phase}_{k}"] for k in ("ok", "failed", "wall_s", "cpu_s"))
                cells.append(f"{ok:6.0f}/{failed:<4.0f} {ok / wall:7.0f}/s {1e6 * cpu / max(ok, 1):7.0f} us")
            print(f" {r['rate']:6.0f} | {name:8} | {cells[0]:38} | {cells[1]}")
    reg_ours, reg_base = _per_cpu_s(ours, "reg"), _per_cpu_s(base, "reg")
    ka_ours, ka_base = _per_cpu_s(ours, "ka"), _per_cpu_s(base, "ka")
    print(f"registrations per server CPU-second (digest, 2 transactions each): ours {reg_ours:,.0f}, "
          f"SIPp UAS {reg_base:,.0f}, ratio {reg_ours / reg_base if reg_base else float('nan'):.2f}")
    print(f"keepalives per server CPU-second: ours {ka_ours:,.0f}, SIPp UAS {ka_base:,.0f}, "
          f"ratio {ka_ours / ka_base if ka_base else float('nan'):.2f}")
    best = max((o["rate"] for o in ours if o["reg_failed"] == 0 and o["ka_failed"] == 0), default=0)
    print(f"highest SIPp rate with every registration and keepalive through (ours): {best:.0f} calls/s")
    record("GB/T 28181: registrations (digest) per server CPU-second", reg_ours, "reg/s", baseline=reg_base,
           baseline_name="SIPp 3.6 as UAS (C++)", group="gb28181")
    record("GB/T 28181: keepalives per server CPU-second", ka_ours, "msg/s", baseline=ka_base,
           baseline_name="SIPp 3.6 as UAS (C++)", group="gb28181")
    record("GB/T 28181: highest offered rate with no loss (ours)", best, "calls/s", group="gb28181",
           goal_note=f"of {', '.join(str(r) for r in RATES)}")


if __name__ == "__main__":
    test_bench_gb28181()
