"""Exports of any filtered camera list (GET /api/v1/cameras/export), on SQLite and PostgreSQL: CSV, GeoJSON and
GB/T 28181 Catalog XML byte for byte what `vms export` writes for the same cameras, with no credential; streamed a
page at a time: the memory an export takes stays a fraction of what the list itself would take."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from api.app import create_app
from api.routes.cameras import export_cameras
from tests.component.test_camera_list_api import SECRET, loaded_inventory
from vms.inventory import service
from vms.inventory.service import Inventory
from vms.store import repository as repo

N = 1200
CLI_FORMAT = {"csv": "csv", "geojson": "geojson", "gb28181": "xml"}
FILTERS = [
    ({}, repo.CameraFilter()),
    ({"region": "371311", "status": "ON"}, repo.CameraFilter(region="371311", status="ON")),
    ({"tag": "school"}, repo.CameraFilter(tags=("school",))),
    (
        {"bbox": "118.2,35.1,118.6,35.45", "use_type": "2"},
        repo.CameraFilter(bbox=(118.2, 35.1, 118.6, 35.45), use_type="2"),
    ),
    ({"search": "nothing like it"}, repo.CameraFilter(search="nothing like it")),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    yield from loaded_inventory(request, tmp_path_factory.mktemp(f"exports-{request.param}"), N)


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gb28181"])
def test_exports_are_what_vms_export_writes_and_hold_no_credential(exported, tmp_path, fmt):
    with TestClient(create_app(exported), base_url="http://127.0.0.1:8000") as client:
        for params, flt in FILTERS:
            r = client.get("/api/v1/cameras/export", params={**params, "format": fmt})
            assert r.status_code == 200, r.text
            assert "attachment" in r.headers["content-disposition"]
            path = tmp_path / f"cli.{CLI_FORMAT[fmt]}"
            count = exported.export(path, fmt=CLI_FORMAT[fmt], flt=flt, actor="test")  # what `vms export` does
            assert r.content == path.read_bytes(), (fmt, params)
            assert count == exported.count_matching(flt)
            assert count or params.get("search"), params  # the data exercise each filter
            assert SECRET.encode() not in r.content and b"credential_id" not in r.content
            if fmt == "gb28181":
                root = etree.fromstring(r.content)
                assert root.findtext("SumNum") == str(count) and len(root.find("DeviceList")) == count
            elif fmt == "geojson":
                assert len(json.loads(r.content)["features"]) == count
            else:
                assert r.content.startswith("\ufeff".encode()) and r.content.count(b"\r\n") == count + 1
        if fmt == "csv":
            assert b"rtsp://10.1.0.10:554/h264" in client.get("/api/v1/cameras/export").content
        bad = client.get("/api/v1/cameras/export", params={"format": "xlsx"})
        assert bad.status_code == 422 and "\n" not in bad.json()["detail"]


def _peak(work) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _stream(inv: Inventory, fmt: str) -> int:
    """Run the export route's response body to its end, as the server would; the bytes it gave."""
    response = export_cameras(inv, repo.CameraFilter(), fmt)  # type: ignore[arg-type]

    async def drain() -> int:
        size = 0
        async for piece in response.body_iterator:
            size += len(piece)
        return size

    return asyncio.run(drain())


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gb28181"])
def test_an_export_holds_a_page_not_the_list(exported, monkeypatch, fmt):
    monkeypatch.setattr(service, "EXPORT_PAGE", 100)
    size = _stream(exported, fmt)  # warm: statement caches, imports
    assert size > N * 100
    streamed = _peak(lambda: _stream(exported, fmt))
    listed = _peak(lambda: exported.list_cameras(repo.CameraFilter(), limit=None))
    # the list of 1,200 cameras against one page of 100 (and one batch of text): flat whatever the length
    assert streamed < listed / 3, (fmt, streamed, listed)


def test_the_export_reads_by_keyset_pages(exported, monkeypatch):
    monkeypatch.setattr(service, "EXPORT_PAGE", 100)
    pages: list[tuple[int, int]] = []
    keyset = repo.camera_keyset

    def spy(session, flt, *, after, limit, columns=None):  # type: ignore[no-untyped-def]
        rows = keyset(session, flt, after=after, limit=limit, columns=columns)
        pages.append((after, len(rows)))
        return rows

    monkeypatch.setattr(repo, "camera_keyset", spy)
    _stream(exported, "geojson")
    assert len(pages) == N // 100 + 1 and all(n <= 100 for _, n in pages)
    assert [a for a, _ in pages] == sorted({a for a, _ in pages})  # each page starts after the last one's end
