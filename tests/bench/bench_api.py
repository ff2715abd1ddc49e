"""Benchmark: the command system's API at 100,000 cameras with 30 days of status history, on SQLite and PostgreSQL.

The API runs as it does in production, `vms serve` (uvicorn, one worker process per CPU) in its own process group;
the clients are httpx (asyncio) in this process, holding a read key (each request authenticates it). Figures, each
with p50, p99 and errors:
- one client, requests one after another (the latency a client sees): a page of 500 cameras, a deep page (cursor
  at 90 % of the list), a filtered page (status OFF in the western half of the area), the change feed (500 changes
  from the start, and from 90 % of the feed), the coverage statistics (summary, indicators, covered area: the first
  request after a change, then warm);
- 200 concurrent clients (asyncio, one connection each), each asking for a mix of the above: p50, p99, errors and
  requests per second. On this machine the clients share the CPUs with the server: the figure is a floor.

Data: Linyi's district polygons and China's civil codes (tests/data), then cameras imported from a generated ledger
(the import's own path: regions by position, search index, tallies, change feed); every
camera has a status (93 % ON, 5 % OFF, 2 % DEFECT) and 30 days of daily health figures; a quarter of the cameras
have status events over the 30 days (going off and coming back 1-4 times), written straight into the health tables.

An endpoint that does not exist yet (or a list without cursors) prints "not available" and is not recorded: the
benchmark runs at any time. Goals (the issue's): page p50 < 20 ms and p99 < 100 ms, statistics < 500 ms, no
errors under load, a deep page no slower than the first (ratio <= 1.2 for noise).

Run: .venv/bin/python -m pytest -q -s tests/bench/bench_api.py   (VMS_BENCH_QUICK=1: 3,000 cameras, 20 clients)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Date, Float, Integer, case, cast, insert, literal, select, update

from tests.bench.bench_listing import generate
from tests.bench.databases import scratch_database
from tests.bench.report import record, size
from tests.conftest import TEST_DATA
from tests.services import free_port
from vms.access.apikeys import create_key
from vms.coverage.service import Coverage
from vms.health.rollup import roll_up
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store.models import cameras, health_daily, health_events, health_latest

ROWS = size("VMS_BENCH_API_ROWS", 100_000, 3_000)
DAYS = 30
CLIENTS = size("VMS_BENCH_API_CLIENTS", 200, 20)
PER_CLIENT = size("VMS_BENCH_API_PER_CLIENT", 10, 5)  # requests each concurrent client makes
SEQUENTIAL = size("VMS_BENCH_API_REQUESTS", 200, 20)  # requests per figure, one client
PAGE = 500
NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - dt.timedelta(days=DAYS)
# The western half of the generated area (longitudes 118.20-118.36), with status OFF: a filtered page.
FILTER = {"status": "OFF", "bbox": "118.20,34.88,118.28,35.02"}
CHUNK = 20_000
OFFSET_LABEL = "deep page of 500 by offset (the old way)"


def _database(request: pytest.FixtureRequest, kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'api.sqlite3'}"
        return
    options = "TEMPLATE template0 LC_CTYPE 'C.UTF-8' LC_COLLATE 'C'"
    with scratch_database(request.getfixturevalue("postgres").url, "bench_api_", options) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def bench_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _database(request, request.param, tmp_path)


def flipped(cid: int) -> bool:
    """A quarter of the cameras went off and came back in the 30 days (status events, lower daily online time)."""
    return cid % 4 == 0


def _history_rows(cid: int, now_status: str, rng: random.Random) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One camera's latest health row and its status events (OFF and back 1-4 times if it flipped)."""
    flips = rng.randint(1, 4) if flipped(cid) else 0
    times = sorted(START + dt.timedelta(seconds=rng.uniform(0, DAYS * 86400)) for _ in range(flips * 2))
    seq = [(at, "OFF" if k % 2 == 0 else "ON") for k, at in enumerate(times)]
    if not seq or seq[-1][1] != now_status:
        seq.append((NOW - dt.timedelta(hours=rng.uniform(1, 48)), now_status))
    events = []
    prev: str | None = None
    for at, st in seq:
        bad = st != "ON"
        events.append(
            {
                "camera_id": cid,
                "at": at,
                "event": st,
                "previous": prev,
                "status": st,
                "stage": "onvif" if bad else None,
                "cause": "timeout" if bad else None,
            }
        )
        prev = st
    ok = now_status == "ON"
    latest = {
        "camera_id": cid,
        "sweep_id": None,
        "at": NOW - dt.timedelta(minutes=5),
        "outcome": "ok" if ok else "off",
        "stage": "login" if ok else "onvif",
        "cause": None if ok else "timeout",
        "clock_offset_s": None,
        "stages": "[]",
        "details": None,
        "status": now_status,
        "since": seq[-1][0],
        "pending": None,
        "streak": 3,
    }
    return latest, events


def _daily(day: dt.date) -> Any:
    """One day's figures of every camera, in one INSERT ... SELECT: a flipped camera was off 0-30 % of the day."""
    c = cameras.c
    share = case((c.id % 4 == 0, cast(c.id % 300, Float) / 1000.0), else_=0.0)
    cols = ["camera_id", "day", "checks", "ok", "online_s", "known_s", "drift_n"]
    rows = select(
        c.id,
        literal(day, Date),
        literal(288),
        cast(288 * (1.0 - share), Integer),
        86400.0 * (1.0 - share),
        literal(86400.0, Float),
        literal(0),
    ).where(c.removed_at.is_(None))
    return insert(health_daily).from_select(cols, rows)


def status_history(inv: Inventory, seed: int = 7) -> dict[str, int]:
    """Every camera's current status (93 % ON, 5 % OFF, 2 % DEFECT, on the camera as the health store keeps it) and
    30 days of daily figures; status events for a quarter of them."""
    rng = random.Random(seed)
    with inv.engine.connect() as conn:
        ids = list(
            conn.execute(select(cameras.c.id).where(cameras.c.removed_at.is_(None)).order_by(cameras.c.id)).scalars()
        )
    status = {cid: "ON" if (x := rng.random()) < 0.93 else "OFF" if x < 0.98 else "DEFECT" for cid in ids}
    counts = {"cameras": len(ids), "events": 0, "daily": len(ids) * DAYS}
    counts["off"] = sum(1 for s in status.values() if s == "OFF")
    for k in range(0, len(ids), CHUNK):
        latest, events = [], []
        for cid in ids[k : k + CHUNK]:
            one, evs = _history_rows(cid, status[cid], rng)
            latest.append(one)
            events.extend(evs)
        with inv.engine.begin() as conn:
            conn.execute(insert(health_latest), latest)
            conn.execute(insert(health_events), events)
        counts["events"] += len(events)
    with inv.engine.begin() as conn:
        for d in range(DAYS):
            conn.execute(_daily((START + dt.timedelta(days=d)).date()))
        for st in ("ON", "OFF", "DEFECT"):  # what the health store keeps on the camera (the feed sees "status")
            chosen = [cid for cid in ids if status[cid] == st]
            for k in range(0, len(chosen), CHUNK):
                conn.execute(update(cameras).where(cameras.c.id.in_(chosen[k : k + CHUNK])).values(status=st))
    return counts


class Server:
    """`vms serve` on a free port in its own process group (ended with the group at the end)."""

    def __init__(self, url: str, data: Path, secret: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "VMS_DATABASE_URL": url,
            "VMS_DATA_DIR": str(data),
            "VMS_LOG_LEVEL": "WARNING",
            "VMS_API_OPEN_READS": "false",
            "VMS_SECRET_KEY": secret,
        }
        data.mkdir(parents=True, exist_ok=True)
        self.log = (data / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vms", "serve", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vms serve exited: {(data / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("vms serve did not answer in 120 s")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class Figure:
    label: str
    path: str
    params: dict[str, Any]
    times: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, seconds: float, status: int) -> None:
        self.times.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 400:
            self.errors += 1

    def pct(self, q: float) -> float:
        if not self.times:
            return float("nan")
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(client: httpx.AsyncClient, fig: Figure) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        r = await client.get(fig.path, params=fig.params)
    except httpx.HTTPError:
        fig.add(time.perf_counter() - t0, 599)
        return None
    fig.add(time.perf_counter() - t0, r.status_code)
    return r


async def probe(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> httpx.Response | None:
    """One request to see whether a figure's endpoint exists (None: it does not, or does not page by cursor)."""
    try:
        r = await client.get(path, params=params)
    except httpx.HTTPError:
        return None
    return r if r.status_code == 200 else None


async def figures(base: str, key: str, rows: int) -> tuple[list[Figure], list[str], dict[str, Figure]]:
    """Find which figures exist and their parameters (the deep cursor, the feed's 90 %), then time each with one
    client; the cold statistics are timed on their first request."""
    missing: list[str] = []
    out: list[Figure] = []
    cold: dict[str, Figure] = {}
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
        first = await probe(client, "/api/v1/cameras", {"limit": PAGE})
        assert first is not None, "the camera list does not answer"
        out.append(Figure("page of 500 (first)", "/api/v1/cameras", {"limit": PAGE}))
        deep_at = max(0, int(rows * 0.9) - PAGE)
        at90 = await probe(client, "/api/v1/cameras", {"limit": PAGE, "offset": deep_at})
        cursor = (at90.json().get("next") if at90 is not None else None) if "next" in first.json() else None
        if cursor:
            out.append(
                Figure("deep page of 500 (cursor at 90 %)", "/api/v1/cameras", {"limit": PAGE, "cursor": cursor})
            )
        else:
            missing.append("deep page (cursor at 90 %)")
        out.append(Figure(OFFSET_LABEL, "/api/v1/cameras", {"limit": PAGE, "offset": deep_at}))
        out.append(Figure("filtered page of 500 (status OFF, bbox)", "/api/v1/cameras", {"limit": PAGE, **FILTER}))
        feed = await probe(client, "/api/v1/changes", {"since": 0, "limit": PAGE})
        if feed is not None:
            head = int(feed.json().get("head", 0))
            out.append(Figure("change feed, 500 from the start", "/api/v1/changes", {"since": 0, "limit": PAGE}))
            out.append(
                Figure("change feed, 500 from 90 %", "/api/v1/changes", {"since": int(head * 0.9), "limit": PAGE})
            )
        else:
            missing.append("change feed")
        for label, path in (
            ("coverage summary", "/api/v1/coverage/summary"),
            ("coverage indicators (30 days)", "/api/v1/coverage/indicators"),
            ("covered area", "/api/v1/coverage/area"),
        ):
            fig = Figure(label, path, {})
            cold_fig = Figure(f"{label}, first request (cold)", path, {})
            r = await timed(client, cold_fig)
            if r is None or r.status_code == 404:
                missing.append(label)
                continue
            cold[label] = cold_fig
            out.append(fig)
        for fig in out:
            for _ in range(SEQUENTIAL):
                await timed(client, fig)
    return out, missing, cold


async def load(base: str, key: str, figs: list[Figure]) -> tuple[list[Figure], float]:
    """CLIENTS clients at once, each with its own connection, each making PER_CLIENT requests from the mix."""
    mix = [Figure(f.label, f.path, f.params) for f in figs]
    rng = random.Random(3)
    plans = [[rng.choice(mix) for _ in range(PER_CLIENT)] for _ in range(CLIENTS)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client_run(plan: list[Figure]) -> None:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=120, limits=limits) as c:
            for fig in plan:
                await timed(c, fig)

    t0 = time.perf_counter()
    await asyncio.gather(*(client_run(p) for p in plans))
    return mix, time.perf_counter() - t0


def test_bench_api(bench_url: str, tmp_path: Path) -> None:
    kind = "postgresql" if bench_url.startswith("postgresql") else "sqlite"
    db = "PostgreSQL" if kind == "postgresql" else "SQLite"
    data = tmp_path / "data"
    secret = Fernet.generate_key().decode()
    settings = Settings(database_url=bench_url, data_dir=data, secret_key=secret, _env_file=None)
    inv = Inventory(settings)
    inv.upgrade()
    # Linyi's districts (polygons) and the civil codes: the generated cameras fall in three of them
    inv.import_regions(TEST_DATA / "geo" / "linyi_districts_gcj02.geojson")
    inv.import_regions(TEST_DATA / "admin" / "areas.csv")
    ledger = tmp_path / "ledger.csv"
    generate(ledger, ROWS)
    t0 = time.perf_counter()
    inv.import_file(ledger, source="ledger:bench")
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    made = status_history(inv)
    t_history = time.perf_counter() - t0
    # 30 days of running would have rolled each day's online seconds up by region once it closed (the first read or
    # the hourly indicators after): the status history above is written straight into the tables, so roll them now
    t0 = time.perf_counter()
    rolled = roll_up(inv)
    t_rolled = time.perf_counter() - t0
    print(f"\n{rolled['rolled']} closed days rolled up: {t_rolled:.1f} s")
    record(f"{DAYS} closed days rolled up at {made['cameras']:,} cameras", t_rolled, "s", group=f"API {db}")
    # The covered areas, built once through the service as a previous server run or `vms coverage refresh` leaves
    # them kept in the database: the honest build cost is shown here; the server's first area request then measures
    # a new process reading them.
    t0 = time.perf_counter()
    areas = Coverage(inv).refresh()
    t_areas = time.perf_counter() - t0
    assert areas["kept"], areas
    print(f"\ncovered areas built from scratch and kept: {t_areas:.1f} s ({areas['regions']} regions, all and working)")
    record(f"covered areas built from scratch and kept at {made['cameras']:,} cameras", t_areas, "s", group=f"API {db}")
    key = create_key(inv, "bench", "read", actor="bench")
    inv.engine.dispose()
    print()
    print(
        f"API at {made['cameras']:,} cameras on {db}: import {t_import:.1f} s; {made['events']:,} status events and "
        f"{made['daily']:,} daily figures over {DAYS} days written in {t_history:.1f} s ({made['off']:,} OFF)"
    )
    server = Server(bench_url, data, secret)
    try:
        figs, missing, cold = asyncio.run(figures(server.base, key, made["cameras"]))
        mixed, wall = asyncio.run(load(server.base, key, figs))
    finally:
        server.stop()

    print(f"one client, {SEQUENTIAL} requests a figure (ms, wall time of the HTTP round trip):")
    print(f"{'figure':<46}{'p50':>9}{'p99':>9}{'errors':>8}")
    by_label = {f.label: f for f in figs}
    for fig in figs:
        print(f"{fig.label:<46}{fig.pct(0.5) * 1e3:>9.1f}{fig.pct(0.99) * 1e3:>9.1f}{fig.errors:>8}")
    for fig in cold.values():
        print(f"{fig.label:<46}{fig.times[0] * 1e3:>9.1f}{'':>9}{fig.errors:>8}")
    for label in missing:
        print(f"{label:<46}{'not available':>26}")
    total = sum(len(f.times) for f in mixed)
    errors = sum(f.errors for f in mixed)
    print(
        f"{CLIENTS} concurrent clients, {PER_CLIENT} requests each ({total:,} requests in {wall:.1f} s, "
        f"{total / wall:.0f}/s), errors {errors}:"
    )
    for fig in mixed:
        if fig.times:
            print(f"{fig.label:<46}{fig.pct(0.5) * 1e3:>9.1f}{fig.pct(0.99) * 1e3:>9.1f}{fig.errors:>8}")
    print(
        "goals: page p50 < 20 ms and p99 < 100 ms; statistics < 500 ms; no errors under load; "
        "deep page no slower than the first"
    )

    n = f"{made['cameras']:,} cameras"
    pages = [f for f in figs if f.path == "/api/v1/cameras" and f.label != OFFSET_LABEL]
    for fig in pages:
        record(f"{fig.label} at {n}, p50", fig.pct(0.5) * 1e3, "ms", max_value=20, group=f"API {db}")
        record(f"{fig.label} at {n}, p99", fig.pct(0.99) * 1e3, "ms", max_value=100, group=f"API {db}")
    first = by_label["page of 500 (first)"]
    deep = by_label.get("deep page of 500 (cursor at 90 %)")
    if deep is not None:
        record(
            f"deep page vs first page at {n}, p50",
            deep.pct(0.5) * 1e3,
            "ms",
            baseline=first.pct(0.5) * 1e3,
            baseline_name="the first page",
            max_ratio=1.2,
            goal_note="no slower than the first (noise: 1.2x)",
            group=f"API {db}",
        )
    record(
        f"deep page by offset at {n}, p50",
        by_label[OFFSET_LABEL].pct(0.5) * 1e3,
        "ms",
        baseline=first.pct(0.5) * 1e3,
        baseline_name="the first page",
        group=f"API {db}",
    )
    for fig in figs:
        if fig.path == "/api/v1/changes":
            record(
                f"{fig.label} at {n}, p50",
                fig.pct(0.5) * 1e3,
                "ms",
                baseline=first.pct(0.5) * 1e3,
                baseline_name="a page of 500 cameras (the same records)",
                group=f"API {db}",
            )
            record(f"{fig.label} at {n}, p99", fig.pct(0.99) * 1e3, "ms", group=f"API {db}")
        elif fig.path.startswith("/api/v1/coverage"):
            record(f"{fig.label} at {n}, p99", fig.pct(0.99) * 1e3, "ms", max_value=500, group=f"API {db}")
    for fig in cold.values():
        record(f"{fig.label} at {n}", fig.times[0] * 1e3, "ms", max_value=500, group=f"API {db}")
    for fig in mixed:
        if fig.times and fig.path == "/api/v1/cameras":
            record(f"{fig.label} at {n}, {CLIENTS} clients, p99", fig.pct(0.99) * 1e3, "ms", group=f"API {db}")
    record(
        f"errors under load ({CLIENTS} clients, {total:,} requests) at {n}",
        errors,
        "errors",
        max_value=0.5,
        group=f"API {db}",
    )
    record(f"throughput, {CLIENTS} clients, mixed requests, at {n}", total / wall, "req/s", group=f"API {db}")
    seq_errors = sum(f.errors for f in figs)
    assert seq_errors == 0, {f.label: f.statuses for f in figs if f.errors}
