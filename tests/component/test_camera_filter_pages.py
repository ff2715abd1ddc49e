"""Filtered cursor pages (the command system's "what is down in this box"), on SQLite and PostgreSQL: the page read
straight from the driver gives exactly the rows and the capped total the SQLAlchemy statement gives, for every filter
on the camera's own columns and page after page; the database reads them through the indexes that fit (SQLite: the
position's index for a box holding few cameras, the ids for one holding many, never the removed_at index for the
cameras not removed; PostgreSQL: planned for the parameters at hand, never a generic plan)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.component.test_camera_list_api import loaded_inventory
from vms.inventory.service import Inventory
from vms.store import repository as repo

N = 1200
FEW = (118.2, 35.1, 118.26, 35.16)  # a box holding a few dozen cameras (positions fill a 1-degree square)
MANY = (117.0, 34.0, 119.5, 36.5)  # every camera
FILTERS = [
    repo.CameraFilter(status="OFF"),
    repo.CameraFilter(status="OFF", bbox=(118.0, 35.0, 118.5, 35.8)),
    repo.CameraFilter(bbox=FEW),
    repo.CameraFilter(bbox=MANY),
    repo.CameraFilter(status="DEFECT", bbox=FEW),
    repo.CameraFilter(region="371311"),  # with its sub-regions
    repo.CameraFilter(region="3713_1"),  # '_' matches itself only: nothing
    repo.CameraFilter(use_type="2", owner="公安局"),
    repo.CameraFilter(tags=("school",)),
    repo.CameraFilter(tags=("school", "ring-road")),
    repo.CameraFilter(status="ON", region="371311", use_type="1", bbox=(118.0, 35.0, 118.7, 35.7)),
    repo.CameraFilter(status="ON", include_removed=True),
    repo.CameraFilter(bbox=MANY, include_removed=True),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def listed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    for inv in loaded_inventory(request, tmp_path_factory.mktemp(f"filter-pages-{request.param}"), N):
        with inv.session() as s:  # a few removed cameras (a list leaves them out unless asked)
            now = dt.datetime.now(dt.UTC)
            repo.update_cameras(s, [{"_id": cid, "removed_at": now} for cid in range(5, N, 50)])
        yield inv


def _walk(inv: Inventory, flt: repo.CameraFilter, limit: int, cap: int) -> tuple[list[dict[str, Any]], set[Any]]:
    rows: list[dict[str, Any]] = []
    totals = set()
    after = 0
    for _ in range(N // limit + 3):
        with inv.session(write=False) as s:
            page, more = repo.cursor_page(s, flt, after=after, limit=limit, cap=cap)
        assert len(page.rows) <= limit
        rows += page.rows
        totals.add((page.total, page.exact))
        if not more:
            return rows, totals
        after = page.rows[-1]["id"]
    raise AssertionError(f"{flt}: the pages never ended")


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in vars_of(f).items()))
def test_a_filtered_page_from_the_driver_is_the_statements_page(listed, flt):
    with listed.session(write=False) as s:
        want = repo.list_cameras(s, flt)  # the SQLAlchemy statement (_filtered)
    assert want or flt.region == "3713_1" or len(flt.tags) == 2, flt  # the data exercise each filter
    if flt.include_removed:
        assert any(r["removed_at"] is not None for r in want)
    for limit, cap in ((7, 5), (7, repo.COUNT_CAP), (1000, repo.COUNT_CAP), (1000, 20)):
        got, totals = _walk(listed, flt, limit, cap)
        assert got == want, (flt, limit, cap)
        # the total on every page: exact up to the cap, else "more than cap"
        assert totals == {(min(len(want), cap), len(want) <= cap)}, (flt, limit, cap, totals)
    with listed.session(write=False) as s:
        page, _ = repo.cursor_page(s, flt, after=0, limit=3, columns=["name", "status"])
    assert [list(r) for r in page.rows] == [["id", "name", "status"]] * len(page.rows)
    assert [r["id"] for r in page.rows] == [r["id"] for r in want[:3]]


def vars_of(flt: repo.CameraFilter) -> dict[str, Any]:
    return {k: getattr(flt, k) for k in flt.__slots__ if getattr(flt, k) not in (None, False, ())}


def _statements(inv: Inventory, flt: repo.CameraFilter) -> list[str]:
    """The SQL a page runs on SQLite, with its values written in."""
    with inv.session(write=False) as s:
        raw = s.connection().connection.dbapi_connection
        seen: list[str] = []
        raw.set_trace_callback(seen.append)
        try:
            repo.cursor_page(s, flt, after=0, limit=20)
        finally:
            raw.set_trace_callback(None)
        return [sql for sql in seen if "FROM cameras" in sql]


def _plan(inv: Inventory, sql: str) -> str:
    with inv.session(write=False) as s:
        return " | ".join(r[-1] for r in s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))


@pytest.mark.parametrize("listed", ["sqlite"], indirect=True)  # SQLite's planner: this database only
def test_sqlite_reads_a_filtered_page_through_the_index_that_fits(listed):
    assert listed.engine.dialect.name == "sqlite"
    plans = {}
    for name, flt in {
        "few": repo.CameraFilter(bbox=FEW),
        "many": repo.CameraFilter(bbox=MANY),
        "status": repo.CameraFilter(status="OFF"),
        "use_type": repo.CameraFilter(use_type="2"),
    }.items():
        plans[name] = [_plan(listed, sql) for sql in _statements(listed, flt)]
        assert plans[name], name
        assert not any("ix_cameras_removed_at" in p for p in plans[name]), plans
    # a box holding few cameras: the position's index finds them (and the count too)
    assert all("ix_cameras_position" in p for p in plans["few"]), plans
    # a box holding most cameras: the page walks the ids and stops at its end (no sort of every camera)
    page = plans["many"][-1]
    assert "ix_cameras_position" not in page and "TEMP B-TREE" not in page, plans
    assert "ix_cameras_status (status=? AND id>?)" in plans["status"][0], plans
    assert "ix_cameras_use_type (use_type=? AND id>?)" in plans["use_type"][0], plans


@pytest.mark.parametrize("listed", ["postgresql"], indirect=True)  # PostgreSQL's plan cache: this database only
def test_postgresql_plans_each_filtered_page_for_its_own_values(listed):
    """psycopg prepares a statement run five times; the server's generic plan for it then served every box alike
    (at 100,000 cameras: 46,000 read by position and sorted, 140 ms, for a box the ids find in 0.6 ms)."""
    assert listed.engine.dialect.name == "postgresql"
    flt = repo.CameraFilter(status="ON", bbox=MANY)
    with listed.session(write=False) as s:
        for after in range(0, 400, 40):
            repo.cursor_page(s, flt, after=after, limit=20)
        prepared = s.execute(
            text("SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%longitude%'")
        ).scalars()
        assert list(prepared) == []


@pytest.mark.parametrize("listed", ["postgresql"], indirect=True)  # PostgreSQL's planner: this database only
def test_postgresql_filter_indexes_cannot_serve_a_lookup_by_id(listed):
    """The foreign-key checks of an import (``id = $1`` on cameras, planned once per connection) took the
    (status, id) index while the table was small and then walked it whole for every row written (an import of
    100,000 cameras: 220 s instead of 20 s). Partial indexes (live cameras) cannot serve that lookup, and a page
    filtered by a rare status, which asks for live cameras, still walks its index in id order."""
    with listed.session(write=False) as s:
        defs = dict(
            s.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'cameras' AND indexname IN "
                     "('ix_cameras_status', 'ix_cameras_use_type', 'ix_cameras_owner')")
            ).all()
        )  # fmt: skip
        assert len(defs) == 3 and all("WHERE (removed_at IS NULL)" in d for d in defs.values()), defs
        s.execute(text("SET LOCAL enable_seqscan = off"))
        s.execute(text("SET LOCAL enable_bitmapscan = off"))
        lookup = " ".join(
            s.execute(text("EXPLAIN SELECT 1 FROM ONLY cameras x WHERE id = 7 FOR KEY SHARE OF x")).scalars()
        )
        assert "pk_cameras" in lookup and "ix_cameras_" not in lookup, lookup
        page = " ".join(
            s.execute(
                text("EXPLAIN SELECT id FROM cameras WHERE removed_at IS NULL AND status = 'VLOST' AND id > 0 "
                     "ORDER BY id LIMIT 20")
            ).scalars()
        )  # fmt: skip
        assert "ix_cameras_status" in page, page
