"""Benchmark: the ONVIF stages of a health sweep (tcp, onvif, login, stream: 4 SOAP calls with auth per device) over
10,000 simulated devices served by another process.

Ours: probes.health.check.check_many (prebuilt envelopes, lxml, pooled keep-alive connections, the login budget
and the media service addresses kept between rounds). A first round learns the service addresses (GetServices);
the rounds after it are the steady state a schedule repeats, and their median is the figure.
Baseline (b) of the issue, in the same run on a sample of the same devices: a well-written onvif-zeep-async loop
(32 devices at a time, one parsed WSDL set reused by every ONVIFCamera) making the same 4 calls.
Not measured here yet: baseline (a), the sync onvif-zeep ONVIFCamera per device in its own virtualenv.
test_bench_health_sweep_local_and_celery: the whole sweep (vms.health.sweep.run_sweep: the same stages, results and
statuses written to PostgreSQL) with the local executor and with Celery and two `vms worker` processes (Redis), side
by side: the overhead of distribution. Prints figures; never asserts on time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import statistics
import time
from typing import Any

from probes.health.check import ONVIF_STAGES, CheckTarget, DeviceMemory, StageTimeouts, check_many
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import make_session
from probes.sim.devices import DEFAULT_PASSWORD, DEFAULT_USERNAME, build_fleet
from tests.bench.report import record, size
from tests.services import free_port

COUNT = size("VMS_BENCH_HEALTH_DEVICES", 10_000, 500)
ROUNDS = size("VMS_BENCH_REPEAT", 3, 1)
BASELINE_COUNT = size("VMS_BENCH_BASELINE_DEVICES", 200, 20)
BASE = "127.68.0.1"
MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"


def _serve(count: int, port: int, stop: Any, served: Any, cpu: Any, base: str = BASE) -> None:
    from vms.discovery.demo import BackgroundFleet

    # WS-UsernameToken everywhere (ONVIF's own auth, and the only one zeep speaks). An HTTP-digest device costs
    # ours one more round trip per round: the challenge that carries a fresh nonce.
    bg = BackgroundFleet(count=count, base_host=base, port=port, fault_mix={}, rtsp=False, discovery=False,
                         auth_by_index=dict.fromkeys(range(count), "wsse"))
    bg.start(timeout=600)
    deadline = time.monotonic() + 1800
    while not stop.wait(0.05) and time.monotonic() < deadline:
        served.value = bg.fleet.server.requests_served
        cpu.value = time.process_time()
    bg.stop()


def _wait_listening(host: str, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"fleet not listening on {host}:{port}")


async def _ours(targets: list[CheckTarget], budget: LoginBudget, memory: DeviceMemory) -> tuple[int, int]:
    ok = changed = 0
    async with make_session(limit=1024, limit_per_host=2) as http:
        async for result in check_many(targets, stages=ONVIF_STAGES, budget=budget, session=http, memory=memory,
                                       concurrency=256, timeouts=StageTimeouts()):
            ok += result.ok
            changed += bool(result.details.get("stream_uri_changed"))
    return ok, changed


async def _zeep_one(host: str, port: int) -> bool:
    """GetSystemDateAndTime, GetDeviceInformation, GetProfiles, GetStreamUri of the main profile."""
    from onvif import ONVIFCamera  # imported lazily: only the benchmark needs it

    camera = ONVIFCamera(host, port, DEFAULT_USERNAME, DEFAULT_PASSWORD)
    try:
        devicemgmt = await camera.create_devicemgmt_service()
        await devicemgmt.GetSystemDateAndTime()
        await devicemgmt.GetDeviceInformation()
        camera.xaddrs[MEDIA_NS] = f"http://{host}:{port}/onvif/media_service"  # known, as ours knows it
        media = await camera.create_media_service()
        profiles: Any = await media.GetProfiles()
        main = max(profiles, key=_pixels)
        setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        reply: Any = await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": main.token})
        return bool(reply.Uri)
    except Exception:  # the baseline counts failures instead of stopping
        return False
    finally:
        await camera.close()


def _pixels(profile: Any) -> int:
    encoder = getattr(profile, "VideoEncoderConfiguration", None)
    resolution = getattr(encoder, "Resolution", None)
    return int(resolution.Width * resolution.Height) if resolution is not None else 0


async def _zeep(targets: list[tuple[str, int]], concurrency: int = 32) -> tuple[int, float, float]:
    """(devices ok, wall s, CPU s) of the loop, timed after a first camera parsed the WSDL set."""
    await _zeep_one(*targets[0])  # parse the WSDL set once, before timing: every later camera reuses it
    slots = asyncio.Semaphore(concurrency)

    async def one(host: str, port: int) -> bool:
        async with slots:
            return await _zeep_one(host, port)

    c0 = time.process_time()
    t0 = time.perf_counter()
    ok = sum(await asyncio.gather(*(one(h, p) for h, p in targets)))
    return ok, time.perf_counter() - t0, time.process_time() - c0


def test_bench_health_onvif_stages() -> None:
    port = free_port()
    devices = build_fleet(COUNT, base_host=BASE, port=port, fault_mix={})
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    served = ctx.Value("q", 0)
    fleet_cpu = ctx.Value("d", 0.0)
    proc = ctx.Process(target=_serve, args=(COUNT, port, stop, served, fleet_cpu), daemon=True)
    proc.start()
    good = (Credential(DEFAULT_USERNAME, DEFAULT_PASSWORD),)
    targets = [
        CheckTarget(d.index, d.host, port, credentials=good, stream_uri=f"rtsp://{d.host}:554/cam{d.index}")
        for d in devices
    ]
    budget, memory = LoginBudget(), DeviceMemory()
    walls: list[float] = []
    cpus: list[float] = []
    requests: list[float] = []
    fleet_cpus: list[float] = []
    try:
        _wait_listening(devices[-1].host, port, time.monotonic() + 900)
        for _round in range(ROUNDS + 1):  # round 0 learns the service addresses
            time.sleep(0.2)
            before, fleet_before = served.value, fleet_cpu.value
            c0 = time.process_time()
            t0 = time.perf_counter()
            ok, changed = asyncio.run(_ours(targets, budget, memory))
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            time.sleep(0.2)  # the fleet publishes its request count every 50 ms
            requests.append((served.value - before) / COUNT)
            fleet_cpus.append(fleet_cpu.value - fleet_before)
            assert ok == COUNT and changed == 0, (ok, changed)
        sample = [(d.host, port) for d in devices[:BASELINE_COUNT]]
        zeep_walls: list[float] = []
        zeep_cpus: list[float] = []
        for _run in range(ROUNDS):  # several short runs: the machine is shared, a single one may hit a busy spell
            zeep_ok, wall, cpu = asyncio.run(_zeep(sample))
            zeep_walls.append(wall)
            zeep_cpus.append(cpu)
            assert zeep_ok == BASELINE_COUNT, zeep_ok
        t_zeep = statistics.median(zeep_walls)
        zeep_cpu = statistics.median(zeep_cpus)
    finally:
        stop.set()
        proc.join(30)
    steady_wall = statistics.median(walls[1:])
    steady_cpu = statistics.median(cpus[1:])
    ours_rate = COUNT / steady_wall
    zeep_rate = BASELINE_COUNT / t_zeep
    print()
    print(f"ours rounds: {', '.join(f'{w:.2f} s' for w in walls)} (first learns the service addresses)")
    print(f"ours:      {COUNT:>6,} devices, stages {'+'.join(ONVIF_STAGES)}: {steady_wall:6.2f} s = "
          f"{ours_rate:7.1f} devices/s, CPU {steady_cpu:.2f} s = {COUNT / steady_cpu:7.1f} devices per CPU second  "
          f"(goal: >= 1,500 devices/s)")
    print(f"           the fleet's CPU (other process) per round: {statistics.median(fleet_cpus[1:]):.2f} s")
    print(f"           HTTP requests per device: first round {requests[0]:.2f}, "
          f"then {statistics.median(requests[1:]):.2f}")
    print(f"zeep (b):  {BASELINE_COUNT:>6,} devices, onvif-zeep-async, 32 at a time, one WSDL set: {t_zeep:6.2f} s = "
          f"{zeep_rate:7.1f} devices/s")
    print(f"           CPU {zeep_cpu:.2f} s = {BASELINE_COUNT / zeep_cpu:7.1f} devices per CPU second")
    cpu_ratio = (zeep_cpu / BASELINE_COUNT) / (steady_cpu / COUNT)
    print(f"ratio:     {ours_rate / zeep_rate:.1f}x in devices/s, {cpu_ratio:.1f}x in CPU per device (goal: >= 4x (b))")
    record(f"health sweep, ONVIF stages, {COUNT:,} devices", ours_rate, "devices/s", baseline=zeep_rate,
           baseline_name=f"onvif-zeep-async loop, one WSDL set, {BASELINE_COUNT:,} devices", min_value=1500,
           min_ratio=4, group="health")
    record(f"health sweep CPU per device ({COUNT:,})", steady_cpu / COUNT * 1e6, "us",
           baseline=zeep_cpu / BASELINE_COUNT * 1e6, baseline_name="onvif-zeep-async loop, one WSDL set",
           goal_note="prober process only; the fleet runs apart", group="health")


# --- the whole sweep, local and on Celery -----------------------------------------------------------------------

SWEEP_COUNT = size("VMS_BENCH_SWEEP_DEVICES", 10_000, 300)
SWEEP_BASE = "127.69.0.1"


def _start_workers(n: int, env: dict[str, str], workdir: Any) -> list[Any]:
    import subprocess
    import sys
    from pathlib import Path

    procs = []
    for i in range(n):
        log = Path(workdir) / f"worker{i}.log"
        out = log.open("wb")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "vms", "worker", "--concurrency", "1", "--name", f"bench{i}@%h"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        ), log, out))
    deadline = time.monotonic() + 120
    for proc, log, _out in procs:
        while " ready." not in log.read_text(errors="replace"):  # logged at INFO (VMS_LOG_LEVEL)
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop_workers(procs)
                raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
    return procs


def _stop_workers(procs: list[Any]) -> None:
    import os
    import signal
    import subprocess

    for proc, _log, out in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()


def test_bench_health_sweep_local_and_celery(tmp_path: Any) -> None:
    """The ONVIF-stage sweep with results and statuses written to PostgreSQL (vms.health.sweep.run_sweep), in this
    process (executor local) and on Celery with two `vms worker` processes (Redis): the overhead of distribution on
    one machine. The fleet runs in another process; all share the machine's cores, so the workers cannot be faster
    here: the figure says what sending shards through Redis and recording from several processes costs."""
    import os

    from cryptography.fernet import Fernet

    from tests.services import start_postgres, start_redis
    from vms.catalog.domain import Observation, SourceKind
    from vms.health.sweep import SweepRequest, run_sweep
    from vms.inventory.credentials import Cipher, add_credential
    from vms.inventory.service import Inventory
    from vms.settings import Settings

    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    served = ctx.Value("q", 0)
    fleet_cpu = ctx.Value("d", 0.0)
    devices = build_fleet(SWEEP_COUNT, base_host=SWEEP_BASE, port=port, fault_mix={})
    proc = ctx.Process(target=_serve, args=(SWEEP_COUNT, port, stop, served, fleet_cpu, SWEEP_BASE), daemon=True)
    proc.start()
    pg, redis = start_postgres(), start_redis()
    settings = Settings(database_url=pg.url, data_dir=tmp_path / "data", secret_key=Fernet.generate_key().decode(),
                        celery_broker=redis.url, celery_visibility_timeout=600.0, celery_wait_s=1800.0,
                        _env_file=None)
    inv = Inventory(settings)
    inv.upgrade()
    with inv.session() as s:
        add_credential(s, Cipher(settings.fernet_key()), name="fleet", username=DEFAULT_USERNAME,
                       password=DEFAULT_PASSWORD, default=True, actor="bench")
    inv.ingest_observations(
        [Observation("onvif", SourceKind.ONVIF, f"host_port:{d.host}:{port}",
                     {"ip_address": d.host, "port": port, "device_service_url": f"http://{d.host}:{port}/onvif/device_service",
                      "stream_uri": f"rtsp://{d.host}:554/cam{d.index}"}) for d in devices],
        source="onvif", kind=SourceKind.ONVIF, snapshot=False, actor="bench",
    )
    req = SweepRequest(stages=ONVIF_STAGES, concurrency=256, per_host=2, shard_size=500)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMS_")}
    env.update(VMS_DATABASE_URL=pg.url, VMS_DATA_DIR=str(settings.data_dir),
               VMS_SECRET_KEY=settings.fernet_key().decode(), VMS_CELERY_BROKER=redis.url,
               VMS_CELERY_VISIBILITY_TIMEOUT="600", VMS_LOG_LEVEL="INFO")
    local: list[float] = []
    celery: list[float] = []
    workers: list[Any] = []
    try:
        _wait_listening(devices[-1].host, port, time.monotonic() + 900)
        for _round in range(ROUNDS + 1):  # round 0 learns the service addresses (and merges nothing new)
            t0 = time.perf_counter()
            summary = run_sweep(inv, req)
            local.append(time.perf_counter() - t0)
            assert summary["outcome"] == {"ok": SWEEP_COUNT}, summary
        import vms.jobs.celery_app  # noqa: F401  (registers the celery executor)

        workers = _start_workers(2, env, tmp_path)
        for _round in range(ROUNDS + 1):  # round 0: each worker process learns the service addresses
            t0 = time.perf_counter()
            summary = run_sweep(inv, req, executor="celery")
            celery.append(time.perf_counter() - t0)
            assert summary["outcome"] == {"ok": SWEEP_COUNT}, summary
    finally:
        _stop_workers(workers)
        inv.engine.dispose()
        stop.set()
        proc.join(30)
        redis.stop()
        pg.stop()
    local_rate = SWEEP_COUNT / statistics.median(local[1:])
    celery_rate = SWEEP_COUNT / statistics.median(celery[1:])
    print()
    print(f"sweep rounds, local:  {', '.join(f'{w:.2f} s' for w in local)} (first learns the service addresses)")
    print(f"sweep rounds, celery: {', '.join(f'{w:.2f} s' for w in celery)}")
    print(f"sweep (local):   {SWEEP_COUNT:>6,} devices, ONVIF stages, results and statuses in PostgreSQL: "
          f"{local_rate:7.1f} devices/s")
    print(f"sweep (celery):  {SWEEP_COUNT:>6,} devices, 2 workers, shards of {req.shard_size} through Redis: "
          f"{celery_rate:7.1f} devices/s = {celery_rate / local_rate:.2f}x local (the overhead of distribution)")
    record(f"health sweep to PostgreSQL on Celery, 2 workers ({SWEEP_COUNT:,})", celery_rate, "devices/s",
           baseline=local_rate, baseline_name="the same sweep, local executor",
           goal_note="one machine: distribution's overhead, not a speed-up", group="health")
