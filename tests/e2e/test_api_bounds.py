"""The API under hostile or careless input, through the real app on SQLite and PostgreSQL: every parameter bounded
(422 with one line), literal search, edits checked as imports are, 409 for a taken GB ID, bodies capped, writes
during a long import, and the Host header checked against DNS rebinding."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from vms.access.apikeys import create_key
from vms.inventory.service import Inventory

LOCAL = "http://127.0.0.1:8000"
HEADER = "设备编码,设备名称,点位编号,经度,纬度,行政区域,安装地址\n"
ROWS = [
    "37131100001326000001,沂河路口,LZ-0001,118.2841,34.9972,371311,沂河路1号",
    "37131100001326000002,通达路50%覆盖,LZ-0002,118.2702,34.9881,371311,通达路2号",
    "37131100001326000003,cam_east,LZ-0003,118.2788,34.9902,371311,双月湖",
    "37131100001326000004,盛庄街道,DEPT-9917,118.2801,34.9911,371311,盛庄",
    "37131100001326000005,IPC-01,LZ-0005,,,371311,未知",  # fails two rules
]


def ledger(path: Path, rows: list[str] = ROWS) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def app_inv(inventory: Inventory, tmp_path: Path) -> Inventory:
    inventory.import_file(ledger(tmp_path / "ledger.csv"), source="ledger:police")
    return inventory


@pytest.fixture
def client(app_inv: Inventory):
    with TestClient(create_app(app_inv), base_url=LOCAL) as c:
        yield c


@pytest.fixture
def writer(app_inv: Inventory) -> dict[str, str]:
    return {"X-API-Key": create_key(app_inv, "ops", "write", actor="test")}


def names(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [item["name"] for item in resp.json()["items"]]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"offset": "99999999999999999999"}, "offset"),
        ({"offset": "-1"}, "offset"),
        ({"limit": "0"}, "limit"),
        ({"limit": "5001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"search": "x" * 10_000}, "search"),  # longer ones the HTTP server itself refuses
        ({"region": "3" * 65}, "region"),
        ({"status": "MAYBE"}, "status"),
        ({"include_removed": "perhaps"}, "include_removed"),
    ],
)
def test_every_list_parameter_is_bounded(client, params, says):
    r = client.get("/api/v1/cameras", params=params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(says) and len(detail) < 300, detail


def test_other_read_parameters_are_bounded(client):
    for url, params in [
        ("/api/v1/stats", {"by": "colour"}),
        ("/api/v1/stats", {"limit": "100000"}),
        ("/api/v1/quality", {"cameras": "true", "limit": "2000"}),
        ("/api/v1/quality/cameras", {"code": "NOT-A-RULE"}),
        ("/api/v1/quality/cameras", {"offset": "99999999999999999999"}),
        ("/api/v1/regions", {"limit": "0"}),
    ]:
        r = client.get(url, params=params)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str), (url, params, r.text)
    assert client.get("/api/v1/cameras/" + "9" * 100).status_code == 422
    assert client.get("/api/v1/cameras", params={"offset": 10_000_000}).json()["items"] == []


def test_search_is_literal_and_covers_the_department_number(client):
    assert names(client.get("/api/v1/cameras", params={"search": "%"})) == ["通达路50%覆盖"]
    assert names(client.get("/api/v1/cameras", params={"search": "_"})) == ["cam_east"]
    assert names(client.get("/api/v1/cameras", params={"search": "50%覆"})) == ["通达路50%覆盖"]
    assert names(client.get("/api/v1/cameras", params={"search": "\\"})) == []
    assert names(client.get("/api/v1/cameras", params={"search": "dept-99"})) == ["盛庄街道"]
    assert names(client.get("/api/v1/cameras", params={"region": "3713%"})) == []


def test_lists_are_pages(client):
    page = client.get("/api/v1/cameras", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and len(page["items"]) == 2 and page["offset"] == 1
    regions = client.get("/api/v1/regions", params={"limit": 5}).json()
    assert set(regions) == {"total", "limit", "offset", "items"}
    stats = client.get("/api/v1/stats", params={"by": "region", "limit": 1}).json()
    assert len(stats["items"]) == 1 and stats["total"] == 5 and stats["more"] is False
    failing = client.get("/api/v1/quality/cameras", params={"limit": 1}).json()
    assert failing["total"] >= 1 and len(failing["items"]) == 1
    assert set(failing["items"][0]) == {"id", "device_id", "name", "problems"}
    quality = client.get("/api/v1/quality", params={"cameras": "true", "limit": 1}).json()
    assert quality["cameras_total"] == failing["total"] and len(quality["cameras"]) == 1
    rule = failing["items"][0]["problems"][0]
    by_rule = client.get("/api/v1/quality/cameras", params={"code": rule}).json()
    assert all(rule in c["problems"] for c in by_rule["items"]) and by_rule["total"] >= 1


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"longitude": 1e308}, 422, "longitude"),
        ({"longitude": "1e308"}, 422, "longitude"),
        ({"latitude": -91}, 422, "latitude"),
        ({"latitude": "north"}, 422, "latitude"),
        ({"name": "长" * 300}, 422, "name"),
        ({"name": "a\x00b"}, 422, "NUL"),
        ({"name": {"nested": "object"}}, 422, "name"),
        ({"port": 10**30}, 422, "port"),
        ({"device_id": "3713110000132600000X"}, 422, "device_id"),
        ({"device_id": "37131100001326000002"}, 409, "already belongs to camera"),
        ({"colour": "red"}, 422, "unknown field"),
    ],
)
def test_edits_are_checked_as_imports_are(client, writer, fields, status, says):
    r = client.patch("/api/v1/cameras/37131100001326000001", json={"fields": fields}, headers=writer)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"] and len(r.json()["detail"]) < 500
    shown = client.get("/api/v1/cameras/37131100001326000001").json()["record"]
    assert shown["longitude"] == 118.2841 and shown["name"] == "沂河路口"


def test_good_edits_land_and_bodies_are_capped(client, writer):
    r = client.patch(
        "/api/v1/cameras/37131100001326000001",
        json={"fields": {"longitude": "118.2850", "name": "沂河路口东"}},
        headers=writer,
    )
    assert r.status_code == 200, r.text
    assert r.json()["record"]["longitude"] == 118.285 and r.json()["record"]["name"] == "沂河路口东"
    huge = client.patch(
        "/api/v1/cameras/37131100001326000001", json={"fields": {"name": "x" * 5_000_000}}, headers=writer
    )
    assert huge.status_code == 413
    chunked = client.patch(
        "/api/v1/cameras/37131100001326000001",
        content=iter([b'{"fields": {"name": "', b"y" * 70_000, b'"}}']),
        headers={**writer, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8000", 200),
        ("localhost:8000", 200),
        ("localhost", 200),
        ("[::1]:8000", 200),
        ("evil.example.com", 400),
        ("evil.example.com:8000", 400),
        ("localhost.evil.example.com", 400),
        ("127.0.0.1.nip.io:8000", 400),
        ("", 400),
    ],
)
def test_loopback_api_answers_local_host_names_only(client, host, status):
    r = client.get("/api/v1/cameras", headers={"Host": host})
    assert r.status_code == status, r.text
    if status == 400:
        assert "VMS_ALLOWED_HOSTS" in r.json()["detail"]


def test_allowed_hosts_are_configurable(app_inv):
    app_inv.settings.allowed_hosts = ["cams.example.org", "*.district.example", "10.0.0.5:8443"]
    with TestClient(create_app(app_inv), base_url=LOCAL) as c:
        assert c.get("/healthz", headers={"Host": "cams.example.org:8000"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "vms.district.example"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "10.0.0.5:8443"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "10.0.0.5:8000"}).status_code == 400
        assert c.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 400
    app_inv.settings.allowed_hosts = []
    with TestClient(create_app(app_inv, bind_host="0.0.0.0"), base_url=LOCAL) as c:
        assert c.get("/healthz", headers={"Host": "anything.example"}).status_code == 200


def _hold_an_import(
    inv: Inventory, path: Path, base: int = 0
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """An import that stops half way through its transaction (records written) until released."""
    inside, release = threading.Event(), threading.Event()

    def progress(_stage: str, done: int, total: int) -> None:
        if 0 < done != total and not inside.is_set():  # rows written, the import not finished
            inside.set()
            release.wait(20)

    rows = [f"3713110000132610{base + i:04d},导入中{base + i},,118.{2800 + i},34.99,371311," for i in range(200)]
    source = f"ledger:{path.stem}"
    t = threading.Thread(
        target=inv.import_file, args=(ledger(path, rows),), kwargs={"source": source, "progress": progress}
    )
    t.start()
    assert inside.wait(20), "the import never started"
    return t, inside, release


def test_a_write_during_a_long_import_waits_briefly_then_gets_503_on_sqlite(app_inv, writer, tmp_path, db_url):
    app_inv.settings.db_lock_timeout = 1.0
    inv = Inventory(app_inv.settings)  # an engine with the short wait, as `vms serve` has
    body = {"fields": {"name": "导入时修改"}}
    try:
        with TestClient(create_app(inv), base_url=LOCAL) as c:
            t, _, release = _hold_an_import(app_inv, tmp_path / "big.csv")
            try:
                started = time.monotonic()
                r = c.patch("/api/v1/cameras/37131100001326000001", json=body, headers=writer)
                waited = time.monotonic() - started
            finally:
                release.set()
                t.join(30)
            if db_url.startswith("sqlite"):
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"] == "1" and "busy" in r.json()["detail"]
                assert 0.9 <= waited < 5, waited
            else:  # PostgreSQL: writers to other rows proceed side by side
                assert r.status_code == 200, r.text
            # A lock held for less than the wait only delays the write.
            t, _, release = _hold_an_import(app_inv, tmp_path / "big2.csv", base=500)
            threading.Timer(0.3, release.set).start()
            r = c.patch("/api/v1/cameras/37131100001326000002", json=body, headers=writer)
            t.join(30)
            assert r.status_code == 200, r.text
    finally:
        inv.engine.dispose()
