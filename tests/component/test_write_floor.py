"""The import benchmark's write floor (tests/bench/bench_inventory.py) writes exactly the rows an import wrote into a
fresh database of the same schema, on SQLite and PostgreSQL, and reports its figure next to the raw floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from tests.bench import bench_inventory as bench
from vms.settings import Settings
from vms.store.models import camera_problems, camera_quality, cameras


def counts(url: str) -> tuple[int, ...]:
    engine = create_engine(url)
    with engine.connect() as conn:
        got = tuple(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (cameras, camera_quality, camera_problems)
        )
        search = "camera_search" if conn.dialect.name == "sqlite" else "cameras"
        indexed = int(conn.exec_driver_sql(f"SELECT count(*) FROM {search}").scalar_one())
    engine.dispose()
    return (*got, indexed)


def test_write_floor_writes_the_imports_rows(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "ledger.csv"
    bench.generate(ledger, 300)
    got = bench.timed_imports(settings, ledger, 1)
    source = got["inv"].settings.database_url
    got["inv"].engine.dispose()
    written: list[str] = []
    fresh = bench.fresh_database

    def remember(s: Settings, n: int) -> Settings:
        new = fresh(s, n)
        written.append(new.database_url)
        return new

    monkeypatch.setattr(bench, "fresh_database", remember)
    seconds = bench.write_floor(source, settings, 1)
    assert seconds > 0 and len(written) == 1
    assert counts(written[0]) == counts(source)
    assert counts(source)[0] > 250 and counts(source)[2] > 0  # cameras, and some problems to write

    results = tmp_path / "results.jsonl"
    monkeypatch.setenv("VMS_BENCH_RESULTS", str(results))
    bench.print_import_figures("SQLite", got, 0.1, "csv+sqlite3 executemany", 4, 0.05, seconds)
    out = capsys.readouterr().out
    assert "import vs write floor" in out and "writing its final rows" in out
    figures = [json.loads(line)["figure"] for line in results.read_text().splitlines()]
    assert any(f.endswith("vs write floor") for f in figures) and any(f.startswith("import") for f in figures)
