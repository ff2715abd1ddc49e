"""The API's pages of cameras (repo.camera_page), on SQLite and PostgreSQL: the same rows in the same order as the
exact listing, whatever the filter, page and cap; a total that is exact, or says "more than total" (counted up to
repo.COUNT_CAP); searches for punctuated text (IPs, MACs, department numbers) that PostgreSQL's trigram index reads
as one word give what a scan gives; a pooled connection the server ended is replaced, not used."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from tests.component.test_camera_search import found, scan, write
from vms.store import repository as repo

ROWS = [
    (f"371311000013200{i:05d}", f"沂河路口{i}", f"LZ-{i:03d}", f"罗庄区通达路{i}号", f"10.0.{i // 10}.{i}")
    for i in range(1, 31)
] + [
    ("37131100001320000031", "10\u01c00\u01c01 a:b-c", "ab\u01c2c", "", "110.0.1.5"),  # U+01C0, U+01C2 as text
    ("37131100001320000032", "mac 00:1a:2b", "x.y", "a-b", "192.168.0.1"),
]

FILTERS = [
    repo.CameraFilter(),
    repo.CameraFilter(search="路口"),  # most cameras match
    repo.CameraFilter(search="路口1"),  # 11 of them
    repo.CameraFilter(search="路"),  # below the trigram length: a scan
    repo.CameraFilter(search="10.0.1."),
    repo.CameraFilter(search="nothing like it"),
    repo.CameraFilter(include_removed=True),
    repo.CameraFilter(search="LZ-01", source="ledger:a"),
    repo.CameraFilter(region="3713"),
]

PAGES = [(3, 0), (5, 0), (3, 3), (4, 9), (2, 11), (4, 25), (10, 28), (5, 40), (1, 200)]


def page(inventory, flt: repo.CameraFilter, *, limit: int, offset: int, cap: int) -> repo.CameraPage:
    with inventory.session(write=False) as s:
        return repo.camera_page(s, flt, limit=limit, offset=offset, cap=cap)


def test_pages_hold_the_same_rows_and_totals_are_exact_or_a_lower_bound(inventory, tmp_path):
    for flt in FILTERS[:2]:  # nothing imported yet (the counters not built either)
        assert page(inventory, flt, limit=5, offset=0, cap=5) == repo.CameraPage(0, True, [])
    inventory.import_file(write(tmp_path / "a.csv", ROWS), source="ledger:a")
    for flt in FILTERS:
        exact, every = inventory.list_cameras(flt, limit=None)
        for cap in (5, 12, 1000):
            for limit, offset in PAGES:
                got = page(inventory, flt, limit=limit, offset=offset, cap=cap)
                where = (flt, cap, limit, offset, got.total, got.exact, exact)
                assert got.rows == every[offset : offset + limit], where
                if got.exact:
                    assert got.total == exact, where
                else:  # "more than total match"
                    assert got.total < exact, where
                if flt == repo.CameraFilter():  # the counter the writes keep: always exact
                    assert got.exact, where
                elif offset + limit <= cap:  # within the cap: the count stops only there
                    assert got.exact == (exact <= cap) and got.total == min(exact, cap), where


def test_the_api_says_when_the_total_is_a_lower_bound(inventory, tmp_path, monkeypatch):
    inventory.import_file(write(tmp_path / "a.csv", ROWS), source="ledger:a")
    monkeypatch.setattr(repo, "COUNT_CAP", 5)
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as client:

        def get(**params: object) -> dict:
            r = client.get("/api/v1/cameras", params=params)
            assert r.status_code == 200, r.text
            return r.json()

        many = get(search="路口", limit=2)
        assert (many["total"], many["total_exact"]) == (5, False)  # more than 5
        assert [c["id"] for c in many["items"]] == [1, 2]
        assert [c["id"] for c in get(search="路口", limit=2, offset=6)["items"]] == [7, 8]
        few = get(search="路口1", limit=2)
        assert (few["total"], few["total_exact"]) == (5, False)
        one = get(search="路口29")
        assert (one["total"], one["total_exact"], [c["id"] for c in one["items"]]) == (1, True, [29])
        every = get(limit=1)
        assert (every["total"], every["total_exact"]) == (32, True)  # unfiltered: the counter, exact
        assert set(every) == {"total", "total_exact", "limit", "offset", "next", "items"}


PUNCTUATED = [
    "10.0.1.",
    "0.1.5",
    "110.0",
    "10\u01c00",  # the letter the index reads '.' as: matches only itself
    "\u01c00\u01c0",
    "a:b-c",
    ":b-",
    "ab\u01c2c",
    "ab-c",
    "00:1a:2b",
    "x.y",
    "a-b",
    "LZ-0",
    "lz-01",
    "192.168.0",
    ".",
    "-",
    "1.",
]


def test_punctuated_searches_equal_a_scan(inventory, tmp_path):
    inventory.import_file(write(tmp_path / "a.csv", ROWS), source="ledger:a")
    for q in PUNCTUATED:
        assert found(inventory, q) == scan(inventory, q), q
        got = page(inventory, repo.CameraFilter(search=q), limit=1000, offset=0, cap=1000)
        assert [r["id"] for r in got.rows] == scan(inventory, q) and got.exact, q
    assert found(inventory, "10.0.1.") == [*range(10, 20), 31]
    assert found(inventory, "10\u01c00") == [31]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no server to end a connection
def test_a_connection_the_server_ended_is_replaced(inventory, tmp_path, db_url):
    inventory.import_file(write(tmp_path / "a.csv", ROWS), source="ledger:a")
    assert inventory.camera_page(repo.CameraFilter(), limit=1).total == 32  # a connection now waits in the pool
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        assert ended and ended >= 1
        deadline = time.monotonic() + 10  # the backends exit (and close their sockets) a moment later
        while time.monotonic() < deadline:
            with admin.connect() as conn:
                others = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            if not others:
                break
            time.sleep(0.05)
        # no pre-ping round trip any more: the checkout sees the ended connection and connects afresh
        for _ in range(3):
            assert inventory.camera_page(repo.CameraFilter(search="路口1"), limit=2).total == 11
    finally:
        admin.dispose()


def test_the_pool_check_reads_sockets_of_any_number():
    """An idle socket passes; one with something to read (the server's last message) or closed by the peer does
    not; descriptors above 1023 too (select.select refuses those: a busy server process has that many)."""
    import os
    import resource
    import socket
    from types import SimpleNamespace

    from sqlalchemy.exc import DisconnectionError

    from vms.store.db import _drop_if_ended

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ours, server = socket.socketpair()
    high = None
    if soft > 1100:
        high = os.dup2(ours.fileno(), 1100)
    try:
        for fd in (ours.fileno(), high):
            if fd is None:
                continue
            conn = SimpleNamespace(closed=False, fileno=lambda fd=fd: fd)
            _drop_if_ended(conn, None, None)  # idle: kept
        server.sendall(b"E")  # e.g. FATAL: terminating connection due to administrator command
        for fd in (ours.fileno(), high):
            if fd is None:
                continue
            with pytest.raises(DisconnectionError):
                _drop_if_ended(SimpleNamespace(closed=False, fileno=lambda fd=fd: fd), None, None)
        with pytest.raises(DisconnectionError):
            _drop_if_ended(SimpleNamespace(closed=True, fileno=lambda: -1), None, None)
    finally:
        if high is not None:
            os.close(high)
        ours.close()
        server.close()
