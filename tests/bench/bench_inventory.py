"""Benchmark: import, merge and quality-check 100,000 generated ledger rows on SQLite and PostgreSQL.

Prints figures (never asserts on time). Baselines run in the same process on the same machine:
- floor: stdlib csv + sqlite3 executemany of the raw rows (no mapping, validation, identity or provenance);
  on PostgreSQL, csv + COPY of the raw rows into a table without indexes (a throw-away server is started);
- write floor: the final rows the import wrote (cameras, observations, stored quality problems, search index),
  written into a fresh database with the same schema the fastest way (executemany / COPY, indexes and the
  search index built after): what any import must pay to keep what an inventory keeps;
- re-import floor: reading the file and hashing every row's cells;
- naive: a per-row ORM loader that looks each row's identity up with its own query (measured on a subset).

Peak memory: each size is imported in a fresh subprocess (``python -m tests.bench.bench_inventory ROWS DIR``),
which reports its resident-set high-water mark; VMS_BENCH_PEAK_ROWS picks the sizes (default 100,000, and
1,000,000 with VMS_BENCH_FULL=1 / `make bench-full`: about 3 minutes more; goal: 1,000,000 rows under 500 MB).

Run: make bench  (or .venv/bin/python -m pytest -q -s tests/bench/bench_inventory.py)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.bench.report import full, record, size, sizes
from tests.conftest import TEST_DATA
from vms.discovery.demo import DEMO_ROADS
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

ROWS = size("VMS_BENCH_ROWS", 100_000, 2_000)
REPEAT = size("VMS_BENCH_REPEAT", 3, 1)
PEAK_ROWS = sizes("VMS_BENCH_PEAK_ROWS", "100000,1000000" if full() else "100000", "2000,10000")
PEAK_GOAL_MB = 500
REPO = Path(__file__).resolve().parents[2]
NAIVE_ROWS = min(3000, ROWS)
ROADS = DEMO_ROADS
TOWNS = ["371311", "37131100", "37131101", "37131102"]
HEADER = [
    "设备编码",
    "设备名称",
    "经度",
    "纬度",
    "行政区域",
    "摄像机类型",
    "IP地址",
    "端口",
    "厂商",
    "录像保存天数",
    "点位类型",
    "安装地址",
    "安装时间",
    "联系方式",
]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(1, rows + 1):
            road = ROADS[i % len(ROADS)]
            lon = 118.20 + rnd.random() * 0.16
            lat = 34.88 + rnd.random() * 0.14
            device_id = f"3713110000132{rnd.choice('56')}{i:06d}"
            if i % 200 == 0:
                device_id = device_id[:-1]  # a broken ID now and then
            w.writerow(
                [
                    device_id,
                    f"罗庄区{road}{i}号点位",
                    f"{lon:.6f}",
                    f"{lat:.6f}",
                    rnd.choice(TOWNS),
                    rnd.choice(["球机", "枪机", "半球", "3"]),
                    f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                    "80",
                    rnd.choice(["海康威视", "大华", "宇视"]),
                    rnd.choice(["30", "90", "1,000"]),
                    rnd.choice(["1", "2", "3"]),
                    f"临沂市罗庄区{road}{i}号",
                    f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "0539-8221234",
                ]
            )


def floor_load(path: Path, db: Path) -> float:
    t = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE raw ({', '.join(f'c{i} TEXT' for i in range(len(HEADER)))})")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        conn.executemany(f"INSERT INTO raw VALUES ({', '.join('?' * len(HEADER))})", reader)
    conn.commit()
    conn.close()
    return time.perf_counter() - t


def naive_load(inv: Inventory, path: Path, limit: int) -> float:
    """What a straightforward loader does: per row, query for the camera by ID, then insert or update it."""
    from vms.store.models import cameras

    t = time.perf_counter()
    with path.open(encoding="utf-8-sig", newline="") as fh, inv.session() as s:
        reader = csv.DictReader(fh)
        for n, row in enumerate(reader):
            if n >= limit:
                break
            found = s.execute(select(cameras.c.id).where(cameras.c.device_id == row["设备编码"])).first()
            values = {
                "device_id": row["设备编码"],
                "name": row["设备名称"],
                "longitude": float(row["经度"]),
                "latitude": float(row["纬度"]),
                "civil_code": row["行政区域"],
            }
            if found:
                s.execute(cameras.update().where(cameras.c.id == found[0]).values(**values))
            else:
                s.execute(cameras.insert().values(**values))
            s.flush()
    return time.perf_counter() - t


def read_and_hash(path: Path) -> float:
    """The re-import floor: read the file and hash every row's cells (what any change detection must do)."""
    t = time.perf_counter()
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            hashlib.sha1("\x1f".join(row).encode(), usedforsecurity=False).digest()
    return time.perf_counter() - t


def copy_floor(url: str, path: Path) -> float:
    """PostgreSQL floor: csv + COPY of the raw rows into a table without indexes, committed."""
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_floor")
        conn.execute(f"CREATE TABLE raw_floor ({', '.join(f'c{i} TEXT' for i in range(len(HEADER)))})")
        with path.open(encoding="utf-8-sig", newline="") as fh, conn.cursor() as cur:
            reader = csv.reader(fh)
            next(reader)
            with cur.copy("COPY raw_floor FROM STDIN") as copy:
                for row in reader:
                    copy.write_row(row)
        conn.commit()
        t = time.perf_counter() - t
        conn.execute("DROP TABLE raw_floor")
        conn.commit()
    return t


# What an import must keep besides its provenance log: its source, the records, the observations they merge,
# their stored quality problems, and the search index (an FTS5 table on SQLite, a GIN index on PostgreSQL).
WRITTEN = ("sources", "cameras", "observations", "camera_quality", "camera_problems")


def write_floor(source_url: str, settings: Settings, repeat: int) -> float:
    """The write floor: the final rows an import wrote (read beforehand from ``source_url``), written into a fresh
    database with the same schema the fastest way each database has, secondary indexes built after the rows;
    SQLite: executemany of the stored values, then an FTS5 rebuild; PostgreSQL: COPY of the rows as dumped by
    COPY TO, then the index builds (the trigram GIN index included). Median seconds of ``repeat`` runs."""
    runs = []
    for n in range(repeat):
        target = fresh_database(settings, 100 + n)
        inv = Inventory(target)
        inv.upgrade()  # the schema, not timed
        inv.engine.dispose()
        if source_url.startswith("sqlite"):
            runs.append(_sqlite_write_floor(source_url, target.database_url))
        else:
            runs.append(_pg_write_floor(source_url, target.database_url))
    return median(runs)


def _sqlite_write_floor(source_url: str, target_url: str) -> float:
    src = sqlite3.connect(source_url.removeprefix("sqlite:///"))
    data = {}
    for table in WRITTEN:
        cur = src.execute(f"SELECT * FROM {table}")
        data[table] = ([d[0] for d in cur.description], cur.fetchall())
    src.close()
    dst = sqlite3.connect(target_url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):  # those of vms.store.db
        dst.execute(f"PRAGMA {pragma}")
    marks = ", ".join("?" for _ in WRITTEN)
    indexes = dst.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})",
        WRITTEN,
    ).fetchall()
    for name, _ in indexes:
        dst.execute(f"DROP INDEX {name}")
    t = time.perf_counter()
    dst.execute("BEGIN")
    dst.execute("INSERT INTO camera_search_deferred (writer) VALUES (1)")  # the index is rebuilt once, below
    for table, (names, rows) in data.items():
        dst.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows)
    dst.execute("DELETE FROM camera_search_deferred")
    dst.execute("INSERT INTO camera_search (camera_search) VALUES ('rebuild')")
    for _, sql in indexes:
        dst.execute(sql)
    dst.execute("COMMIT")
    seconds = time.perf_counter() - t
    dst.close()
    return seconds


def _pg_write_floor(source_url: str, target_url: str) -> float:
    import psycopg

    def connect(url: str) -> Any:
        return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))

    data: dict[str, tuple[list[str], list[bytes]]] = {}
    with connect(source_url) as src, src.cursor() as cur:
        for table in WRITTEN:
            cur.execute(f"SELECT * FROM {table} LIMIT 0")
            names = [d.name for d in cur.description or ()]
            with cur.copy(f"COPY {table} ({', '.join(names)}) TO STDOUT") as copy:
                data[table] = (names, [bytes(block) for block in copy])
    with connect(target_url) as dst:
        indexes = dst.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            (list(WRITTEN),),
        ).fetchall()
        for name, _ in indexes:
            dst.execute(f"DROP INDEX {name}")
        dst.commit()
        t = time.perf_counter()
        with dst.cursor() as cur:
            for table, (names, blocks) in data.items():
                with cur.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
                    for block in blocks:
                        copy.write(block)
            for _, sql in indexes:
                cur.execute(sql)
        dst.commit()
        return time.perf_counter() - t


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed_imports(settings: Settings, ledger: Path, repeat: int) -> dict[str, Any]:
    """First import into a fresh inventory and a re-import of the unchanged file, ``repeat`` times (medians of
    wall and CPU seconds); the last inventory is left for the quality figures."""
    first_s, first_cpu, re_s, re_cpu = [], [], [], []
    inv: Inventory | None = None
    first: Any = None
    for n in range(repeat):
        if inv is not None:
            inv.engine.dispose()
        inv = Inventory(fresh_database(settings, n))
        inv.upgrade()
        inv.import_regions(TEST_DATA / "geo/luozhuang_gcj02.json")
        inv.import_regions(TEST_DATA / "admin/areas.csv")
        t, c = time.perf_counter(), time.process_time()
        first = inv.import_file(ledger, source="ledger:bench")
        first_s.append(time.perf_counter() - t)
        first_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        second = inv.import_file(ledger, source="ledger:bench")
        re_s.append(time.perf_counter() - t)
        re_cpu.append(time.process_time() - c)
        assert not second.result.changed
    assert inv is not None
    return {
        "inv": inv,
        "first": first,
        "first_s": median(first_s),
        "first_cpu": median(first_cpu),
        "re_s": median(re_s),
        "re_cpu": median(re_cpu),
        "timings": first.result.timings,
    }


def fresh_database(settings: Settings, n: int) -> Settings:
    url = settings.database_url
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        new = path.with_name(f"{path.stem}-{n}{path.suffix}")
        return settings.model_copy(update={"database_url": f"sqlite:///{new}"})
    from sqlalchemy import create_engine, text

    base = url.rsplit("/", 1)[0]
    name = f"vms_bench_{os.getpid()}_{n}"
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return settings.model_copy(update={"database_url": base + "/" + name})


WRITE_FLOOR_NAME = {
    "SQLite": "writing its final rows: executemany, indexes and FTS5 after",
    "PostgreSQL": "writing its final rows: COPY, indexes after",
}


def print_import_figures(
    db: str,
    got: dict[str, Any],
    floor: float,
    floor_name: str,
    goal: float,
    hashed: float,
    written: float | None = None,
) -> None:
    print(
        f"{db}: import {got['first'].rows:,} rows (first): {got['first_s']:>7.2f} s ({got['first_cpu']:.2f} s CPU)   "
        f"{floor_name} floor {floor:.2f} s   ratio {got['first_s'] / floor:.1f}x (goal <= {goal:.0f}x)"
    )
    print(
        f"{db}: re-import, unchanged:      {got['re_s']:>7.2f} s ({got['re_cpu']:.2f} s CPU)   "
        f"read+hash {hashed:.2f} s   ratio {got['re_s'] / hashed:.1f}x (goal <= 2x)"
    )
    if written is not None:
        print(
            f"{db}: import vs write floor:     {got['first_s']:>7.2f} s   writing its final rows {written:.2f} s   "
            f"ratio {got['first_s'] / written:.1f}x"
        )
    print(f"{db}: stages of the first import (s): {got['timings']}")
    rows = f"{got['first'].rows:,} rows"
    record(f"import {rows}", got["first_s"], "s", baseline=floor, baseline_name=floor_name, max_ratio=goal,
           group=db)
    if written is not None:
        record(f"import {rows} vs write floor", got["first_s"], "s", baseline=written,
               baseline_name=WRITE_FLOOR_NAME.get(db, "writing its final rows"), group=db)
    record(f"re-import {rows}, unchanged", got["re_s"], "s", baseline=hashed, baseline_name="read+hash the file",
           max_ratio=2, group=db)


def test_bench_inventory_100k(tmp_path: Path, test_data: Path) -> None:
    ledger = tmp_path / "ledger.csv"
    generate(ledger, ROWS)
    settings = bench_settings(tmp_path)
    got = timed_imports(settings, ledger, REPEAT)
    inv, first = got["inv"], got["first"]
    t0 = time.perf_counter()
    report, _ = inv.quality()
    t_quality = time.perf_counter() - t0
    with inv.session(write=False) as s:
        n = repo.count_cameras(s, repo.CameraFilter())
    assert n == first.accepted

    t_floor = median([floor_load(ledger, tmp_path / f"floor{i}.sqlite3") for i in range(3)])
    t_hash = median([read_and_hash(ledger) for _ in range(3)])
    naive_inv = Inventory(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'naive.sqlite3'}"}))
    naive_inv.upgrade()
    t_naive = naive_load(naive_inv, ledger, NAIVE_ROWS)
    naive_per_row = t_naive / NAIVE_ROWS
    ours_per_row = got["first_s"] / ROWS

    print()
    print(f"rows generated:                {ROWS:>10,}  ({first.rejected} rejected as broken, {n:,} cameras)")
    print(f"medians of {REPEAT} runs (VMS_BENCH_REPEAT); floors: medians of 3")
    t_written = write_floor(inv.settings.database_url, settings, 3)
    print_import_figures("SQLite", got, t_floor, "csv+sqlite3 executemany", 4, t_hash, t_written)
    print(f"quality report ({n:,}):      {t_quality:>10.2f} s   pass rate {report.overall.rate:.1%}")
    print(
        f"baseline naive per-row ORM:    {naive_per_row * 1e3:>10.3f} ms/row on {NAIVE_ROWS:,} rows "
        f"(~{naive_per_row * ROWS:.0f} s for {ROWS:,}); ours {ours_per_row * 1e3:.3f} ms/row: "
        f"{naive_per_row / ours_per_row:.1f}x faster"
    )
    record(f"import, per row ({ROWS:,} rows)", ours_per_row * 1e3, "ms", baseline=naive_per_row * 1e3,
           baseline_name=f"naive per-row ORM, {NAIVE_ROWS:,} rows", group="SQLite")
    inv.engine.dispose()
    naive_inv.engine.dispose()


def test_bench_import_postgres(tmp_path: Path) -> None:
    """The same import on a throw-away PostgreSQL server, against COPY of the raw rows."""
    from tests.services import ServiceUnavailable, skip_or_fail, start_postgres

    ledger = tmp_path / "ledger.csv"
    generate(ledger, ROWS)
    try:
        svc = start_postgres()
    except ServiceUnavailable as exc:
        skip_or_fail(exc)
    try:
        settings = bench_settings(tmp_path).model_copy(update={"database_url": svc.url})
        got = timed_imports(settings, ledger, REPEAT)
        got["inv"].engine.dispose()
        t_floor = median([copy_floor(svc.url, ledger) for _ in range(3)])
        t_hash = median([read_and_hash(ledger) for _ in range(3)])
        t_written = write_floor(got["inv"].settings.database_url, settings, 3)
        print()
        print(f"medians of {REPEAT} runs (VMS_BENCH_REPEAT); floors: medians of 3")
        print_import_figures("PostgreSQL", got, t_floor, "csv+COPY", 5, t_hash, t_written)
    finally:
        svc.stop()


def bench_settings(tmp: Path) -> Settings:
    return Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'vms.sqlite3'}",
        secret_key="x" * 43 + "=",
        _env_file=None,
    )


def high_water_kb() -> int:
    """This process's own resident-set high-water mark in kB: VmHWM of its address space. getrusage's ru_maxrss
    is not that: Linux carries the parent's mark over fork and exec, so a child of a big pytest process starts
    at the parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def import_once(rows: int, tmp: Path) -> dict[str, float]:
    """In this process (a fresh one, see test_bench_import_peak_memory): regions, then one import of ``rows``."""
    ledger = tmp / "ledger.csv"
    inv = Inventory(bench_settings(tmp))
    inv.upgrade()
    inv.import_regions(TEST_DATA / "geo/luozhuang_gcj02.json")
    inv.import_regions(TEST_DATA / "admin/areas.csv")
    before = high_water_kb()
    t0 = time.perf_counter()
    rep = inv.import_file(ledger, source="ledger:bench")
    seconds = time.perf_counter() - t0
    peak_kb = high_water_kb()
    inv.engine.dispose()
    return {
        "rows": rows,
        "accepted": rep.accepted,
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_kb / 1024, 1),
        "before_mb": round(before / 1024, 1),
    }


def test_bench_import_peak_memory(tmp_path: Path) -> None:
    print()
    peaks: list[tuple[int, float]] = []
    for rows in PEAK_ROWS:
        work = tmp_path / f"peak{rows}"
        work.mkdir()
        generate(work / "ledger.csv", rows)
        proc = subprocess.run(
            [sys.executable, "-m", "tests.bench.bench_inventory", str(rows), str(work)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["accepted"] == rows
        print(
            f"peak memory, {rows:>9,} rows:   {got['peak_mb']:>8,.0f} MB   (high-water mark before the import, "
            f"regions loaded: {got['before_mb']:,.0f} MB; import {got['seconds']:,.1f} s, "
            f"{rows / got['seconds']:,.0f} rows/s; goal < {PEAK_GOAL_MB} MB at 1,000,000)"
        )
        (work / "ledger.csv").unlink()
        smallest = peaks[0] if peaks else None
        peaks.append((rows, got["peak_mb"]))
        record(f"import {rows:,} rows, peak RSS (own process)", got["peak_mb"], "MB",
               baseline=None if smallest is None else smallest[1],
               baseline_name="" if smallest is None else f"peak at {smallest[0]:,} rows",
               peak_mb=got["peak_mb"], max_value=PEAK_GOAL_MB if rows >= 1_000_000 else None,
               goal_note="memory flat as files grow" if rows >= 1_000_000 else
               "" if rows < max(PEAK_ROWS) or max(PEAK_ROWS) >= 1_000_000 else "1,000,000 rows: make bench-full",
               group="SQLite")


if __name__ == "__main__":
    print(json.dumps(import_once(int(sys.argv[1]), Path(sys.argv[2]))))
