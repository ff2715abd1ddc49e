"""Benchmark: camera lists and text search at 100,000 cameras, on SQLite and PostgreSQL; and `vms --help`.

Prints figures (never asserts on time), ours and a floor or baseline measured in the same run, and their ratio:
- a page of 100 cameras (GET /api/v1/cameras?limit=100, server CPU: the API process, plus the PostgreSQL backend's
  CPU on PostgreSQL) against the floor: the same page's SQL through the bare driver (sqlite3 / psycopg);
- searches through the index (SQLite FTS5 trigram, PostgreSQL pg_trgm) against the baseline: the unindexed LIKE
  search the API did before (four columns, ILIKE, count and page); the API counts up to 1,000 matches
  (repo.COUNT_CAP; beyond, its total says "more than 1,000");
- what keeping the index current adds to an import (the same file imported with and without the index; on SQLite
  "without" keeps a plain table where the FTS5 table was, as the import writes new rows' text there in bulk);
- `vms --help` wall time against `python -c "import typer, rich"`.

The PostgreSQL database is created with LC_CTYPE C.UTF-8 (Debian's default for new clusters is the system's UTF-8
locale): under LC_CTYPE=C pg_trgm sees no CJK characters and Chinese searches are scans.

Run: .venv/bin/python -m pytest -q -s tests/bench/bench_listing.py   (VMS_BENCH_ROWS=20000 for a quick run)
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import create_engine, text

from api.app import create_app
from tests.bench.report import record, size
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

ROWS = size("VMS_BENCH_ROWS", 100_000, 2_000)
STREETS = ["沂河路", "罗庄大道", "湖北路", "银雀山路", "通达路", "盛庄街道", "傅庄街道"]
# (label, text): a name fragment, a department number, part of an address, an IP prefix, a GB ID fragment, a
# word in every address, 2 characters (below the trigram length: a scan)
SEARCHES = [
    ("name fragment, 1 match", "路口12345"),
    ("department number, 100", "LZ-0123"),
    ("IP prefix, 256", "10.0.23."),
    ("GB ID fragment, 10", "0000132000777"),
    ("common word, all", "罗庄区"),
    ("2 characters (scan)", "路口"),
]


def generate(path: Path, rows: int, seed: int = 5) -> None:
    rnd = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["设备编码", "设备名称", "编号", "安装地址", "IP地址", "经度", "纬度", "厂商", "MAC"])
        for i in range(1, rows + 1):
            street = rnd.choice(STREETS)
            w.writerow(
                [
                    f"37131100001320{i:06d}",
                    f"{street}{i % 997}号路口{i}",
                    f"LZ-{i:06d}",
                    f"临沂市罗庄区{rnd.choice(STREETS)}{i}号",
                    f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                    f"{118.20 + rnd.random() * 0.16:.6f}",
                    f"{34.88 + rnd.random() * 0.14:.6f}",
                    rnd.choice(["海康威视", "大华", "宇视"]),
                    f"00:1a:2b:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
                ]
            )


def median_of(fn: Callable[[], Any], runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


class ServerCpu:
    """CPU seconds of this process plus, on PostgreSQL, of the backends serving the database."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=1) if "postgresql" in url else None
        self.db = url.rsplit("/", 1)[-1]

    def _backends(self) -> float:
        if self.engine is None:
            return 0.0
        with self.engine.connect() as conn:
            pids = list(
                conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                    {"d": self.db},
                ).scalars()
            )
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def median(self, fn: Callable[[int], Any], runs: int) -> tuple[float, float]:
        """Median CPU of one call (this process; this process and the database backends), from runs in batches:
        ``fn(n)`` makes n calls (the backends' CPU is read in clock ticks)."""
        batch = 10
        ours, both = [], []
        for _ in range(max(1, runs // batch)):
            c0, b0 = time.process_time(), self._backends()
            fn(batch)
            c1, b1 = time.process_time(), self._backends()
            ours.append((c1 - c0) / batch)
            both.append((c1 - c0 + b1 - b0) / batch)
        return statistics.median(ours), statistics.median(both)


def asgi_get(app: Any, path: str, params: dict[str, Any], times: int = 1) -> tuple[int, bytes]:
    """Requests straight into the ASGI app (no HTTP client in the figures), ``times`` of them in one task, as a
    server's requests share one event loop and its worker threads; the last one's status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(params).encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def requests() -> None:
        for _ in range(times):
            sent.clear()
            await app(scope, receive, send)

    asyncio.run(requests())
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def build(url: str, data: Path, ledger: Path, *, index: bool) -> tuple[Inventory, float]:
    settings = Settings(data_dir=data, database_url=url, secret_key="x" * 43 + "=", _env_file=None)
    inv = Inventory(settings)
    inv.upgrade()
    if not index:  # the same schema without the search index, to see what keeping it current costs an import
        with inv.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                for name in ("insert", "delete", "update"):
                    conn.exec_driver_sql(f"DROP TRIGGER cameras_search_{name}")
                # a plain table where the FTS5 table was: the import's one INSERT ... SELECT per chunk still runs
                conn.exec_driver_sql("DROP TABLE camera_search")
                conn.exec_driver_sql(f"CREATE TABLE camera_search ({', '.join(repo.SEARCH_COLUMNS)})")
            else:
                conn.exec_driver_sql("DROP INDEX ix_cameras_search")
    t0 = time.perf_counter()
    inv.import_file(ledger, source="ledger:bench")
    return inv, time.perf_counter() - t0


@pytest.fixture(params=["sqlite", "postgresql"])
def bench_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases (with and without the search index) on SQLite or a throw-away PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.sqlite3'}", f"sqlite:///{tmp_path / 'b.sqlite3'}"
        return
    postgres = request.getfixturevalue("postgres")
    base = postgres.url.rsplit("/", 1)[0]
    names = ["bench_" + uuid.uuid4().hex[:10], "bench_" + uuid.uuid4().hex[:10]]
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template0 LC_CTYPE 'C.UTF-8' LC_COLLATE 'C'")
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def repeated(fn: Callable[[], Any]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def floor_page(url: str) -> Callable[[], Any]:
    """The page's SQL (the counter, the rows) through the bare driver, rows fetched as tuples."""
    sql_page = "SELECT * FROM cameras WHERE removed_at IS NULL ORDER BY id LIMIT 100"
    sql_total = "SELECT total FROM quality_tallies WHERE dim = 'all' AND key = ''"
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split("///", 1)[1])
    else:
        import psycopg

        conn = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True)

    def run() -> None:
        conn.execute(sql_total).fetchall()
        conn.execute(sql_page).fetchall()

    return run


def baseline_search(inv: Inventory, query: str) -> Callable[[], Any]:
    """The search as it was: ILIKE on four columns, no index, count and page."""
    like = "%" + repo.escape_like(query) + "%"
    cols = ("name", "device_id", "address", "local_id")
    cond = " OR ".join(f"{c} LIKE :p ESCAPE '\\'" for c in cols)
    if inv.engine.dialect.name == "postgresql":
        cond = cond.replace(" LIKE ", " ILIKE ")
    else:
        cond = " OR ".join(f"lower({c}) LIKE lower(:p) ESCAPE '\\'" for c in cols)
    count = text(f"SELECT count(*) FROM cameras WHERE removed_at IS NULL AND ({cond})")
    page = text(f"SELECT * FROM cameras WHERE removed_at IS NULL AND ({cond}) ORDER BY id LIMIT 100")

    def run() -> None:
        with inv.engine.connect() as conn:
            conn.execute(count, {"p": like}).scalar()
            conn.execute(page, {"p": like}).all()

    return run


def test_bench_listing(bench_urls: tuple[str, str], tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.csv"
    generate(ledger, ROWS)
    url, url_bare = bench_urls
    kind = url.split(":", 1)[0].split("+")[0]
    inv_bare, t_bare = build(url_bare, tmp_path / "data-b", ledger, index=False)
    inv_bare.engine.dispose()
    inv, t_index = build(url, tmp_path / "data-a", ledger, index=True)
    app = create_app(inv)
    cpu = ServerCpu(url)

    status, body = asgi_get(app, "/api/v1/cameras", {"limit": 100})
    assert status == 200 and body.startswith(b'{"total":%d,' % ROWS)
    page_ours = cpu.median(lambda n: asgi_get(app, "/api/v1/cameras", {"limit": 100}, n), 50)
    page_floor = cpu.median(repeated(floor_page(url)), 50)
    rows: list[tuple[str, tuple[float, float], tuple[float, float], str, float | None]] = [
        ("page of 100", page_ours, page_floor, "same SQL, bare driver", 3.0)
    ]
    for label, query in SEARCHES:
        ours_total, _ = inv.list_cameras(repo.CameraFilter(search=query), limit=0)
        status, body = asgi_get(app, "/api/v1/cameras", {"limit": 100, "search": query})
        # the API counts up to repo.COUNT_CAP matches ("more than 1,000" beyond)
        counted = b'{"total":%d,"total_exact":%s,' % (
            min(ours_total, repo.COUNT_CAP), b"true" if ours_total <= repo.COUNT_CAP else b"false"
        )
        assert status == 200 and body.startswith(counted), body[:80]
        ours = cpu.median(lambda n, q=query: asgi_get(app, "/api/v1/cameras", {"limit": 100, "search": q}, n), 20)
        base = cpu.median(repeated(baseline_search(inv, query)), 10)
        goal = None if len(query) < 3 else 10.0  # under 3 characters no trigram: a scan, no goal
        rows.append((f"search: {label} ({ours_total:,})", ours, base, "unindexed LIKE", goal))

    print()
    print(f"listing and search at {ROWS:,} cameras on {kind}; medians of server CPU per request in ms: the API")
    print("process, and (PostgreSQL) the API process plus the database backends; ratio of the latter")
    print(f"{'figure':<44}{'ours API':>10}{'ours +DB':>10}{'floor/base':>12}{'ratio':>9}   vs")
    db = "PostgreSQL" if kind == "postgresql" else "SQLite"
    for label, (api, ours_db), (_, other), what, goal_ms in rows:
        print(
            f"{label:<44}{api * 1e3:>10.2f}{ours_db * 1e3:>10.2f}{other * 1e3:>12.2f}"
            f"{ours_db / max(other, 1e-9):>8.2f}x   {what}"
        )
        record(f"{label} at {ROWS:,} cameras, server CPU" + (" (API + DB)" if kind == "postgresql" else ""),
               ours_db * 1e3, "ms", baseline=other * 1e3, baseline_name=what, max_value=goal_ms,
               goal_note="" if goal_ms is not None else "a scan: no goal", group=db)
    print(
        f"{'import, index kept current':<44}{t_index:>19.1f}s{t_bare:>11.1f}s"
        f"{t_index / t_bare:>8.2f}x   the same import without the index"
    )
    print("goals: a page under 3 ms of server CPU; a search under 10 ms (1-2 characters are a scan)")
    record(f"import {ROWS:,} rows, search index kept current", t_index, "s", baseline=t_bare,
           baseline_name="the same import without the index", group=db)
    inv.engine.dispose()
    if cpu.engine is not None:
        cpu.engine.dispose()


def test_bench_cli_start() -> None:
    def run(*args: str) -> None:
        subprocess.run([sys.executable, *args], check=True, capture_output=True, timeout=60)

    ours = median_of(lambda: run("-m", "vms", "--help"), 7)
    floor = median_of(lambda: run("-c", "import typer, rich"), 7)
    print()
    print(
        f"{'`vms --help`, wall':<48}{ours * 1e3:>9.0f}ms{floor * 1e3:>14.0f}ms{ours / floor:>8.2f}x   "
        "python -c 'import typer, rich'"
    )
    print("goal: `vms --help` under 0.3 s")
    record("`vms --help`, wall", ours * 1e3, "ms", baseline=floor * 1e3, baseline_name="python -c 'import typer, rich'",
           max_value=300, group="CLI")
