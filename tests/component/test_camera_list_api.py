"""The command system's camera lists (GET /api/v1/cameras), on SQLite and PostgreSQL: every filter (region with its
sub-regions, status, use type, owner, source, tags, bounding box, text) gives what an independent selection of the
same cameras gives, whole lists walked by cursor with no camera twice or missed; field selection (422 for a field
that is not one); a page deep in the list reads what the first page reads (keyset, no OFFSET: the database's own
work counted); one camera with its provenance, health and latest samples (and the sample's JPEG); no credential in
any of it."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from probes.health.results import CheckResult, StageResult
from tests.conftest import fresh_database
from vms.frames.store import SampleRow, SampleStore
from vms.health.service import Health
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

N = 1500
SECRET = "s3cret-pw"
HEADER = "device_id,name,civil_code,owner,use_type,status,longitude,latitude,address,stream_uri"
REGIONS = "code,name\n371311,罗庄区\n37131101,罗庄街道\n37131102,傅庄街道\n371312,河东区\n370102,历下区\n"


def write_cameras(path: Path, n: int, *, seed: int = 7, first: int = 1) -> Path:
    """``n`` cameras over five civil codes (two of them sub-regions of 371311), three statuses, use types, owners,
    positions in a 1-degree square; every tenth with a stream URL carrying a login."""
    rnd = random.Random(seed)
    lines = [HEADER]
    for i in range(first, first + n):
        civil = rnd.choice(["371311", "37131101", "37131102", "371312", "370102"])
        lines.append(
            ",".join(
                [
                    f"{civil[:6]}00001320{i:06d}",
                    f"路口{i}",
                    civil,
                    rnd.choice(["公安局", "交通局", ""]),
                    rnd.choice(["1", "2", "3", ""]),
                    rnd.choice(["ON", "ON", "OFF", "DEFECT"]),
                    f"{118.0 + rnd.random():.6f}",
                    f"{35.0 + rnd.random():.6f}",
                    f"通达路{i}号",
                    f"rtsp://admin:{SECRET}@10.1.{i // 250}.{i % 250}:554/h264" if i % 10 == 0 else "",
                ]
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(inv: Inventory, tmp: Path, n: int) -> None:
    (tmp / "regions.csv").write_text(REGIONS, encoding="utf-8")
    inv.import_regions(tmp / "regions.csv")
    inv.import_file(write_cameras(tmp / "a.csv", n), source="ledger:a")
    # a second source listing every seventh camera (the same GB IDs: the same cameras)
    rows = (tmp / "a.csv").read_text(encoding="utf-8").splitlines()
    (tmp / "b.csv").write_text("\n".join([rows[0], *rows[1::7]]) + "\n", encoding="utf-8")
    inv.import_file(tmp / "b.csv", source="ledger:b")
    for cid in range(3, n, 37):
        inv.tag_camera(str(cid), ["school"], actor="test")
    for cid in range(3, n, 74):
        inv.tag_camera(str(cid), ["ring-road"], actor="test")
    with inv.session() as s:
        # the cameras whose URL carried a login point at the credential set it was kept in (as a probe links them)
        creds = dict(s.execute(text("SELECT name, id FROM credentials")).all())
        assert creds, "the logins of the stream URLs are kept in the credential store"
        links = [{"_id": cid, "credential_id": next(iter(creds.values()))} for cid in range(10, n + 1, 10)]
        repo.update_cameras(s, links)
        repo.refresh_search_index(s)  # PostgreSQL: planner statistics for the table that grew from empty


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def listed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    yield from loaded_inventory(request, tmp_path_factory.mktemp(f"lists-{request.param}"), N)


def loaded_inventory(request: pytest.FixtureRequest, tmp: Path, n: int) -> Iterator[Inventory]:
    """An upgraded Inventory (governed region 371311) on request.param's fresh database, holding load()'s n
    cameras; disposed after."""
    for url in fresh_database(request, request.param, tmp / "vms.sqlite3"):
        settings = Settings(
            database_url=url,
            data_dir=tmp / "data",
            secret_key=Fernet.generate_key().decode(),
            governed_region="371311",
            _env_file=None,
        )
        inv = Inventory(settings)
        inv.upgrade()
        load(inv, tmp, n)
        try:
            yield inv
        finally:
            inv.engine.dispose()


@pytest.fixture(scope="module")
def client(listed: Inventory) -> Iterator[TestClient]:
    with TestClient(create_app(listed), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.fixture(scope="module")
def every(listed: Inventory) -> list[dict[str, Any]]:
    """The reference: every camera, read without the API."""
    with listed.session(write=False) as s:
        rows = repo.list_cameras(s, repo.CameraFilter(include_removed=True))
        sources = repo.camera_sources(s)
    for r in rows:
        r["_sources"] = sources.get(r["id"], [])
    return rows


def walk(client: TestClient, params: dict[str, Any], limit: int) -> list[int]:
    """Every id of a list, page by page through ``next``: ascending, none twice."""
    ids: list[int] = []
    cursor = None
    for _ in range(N // limit + 3):  # bounded: one page more than the list can hold
        r = client.get("/api/v1/cameras", params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        got = [c["id"] for c in page["items"]]
        assert len(got) <= limit
        assert got == sorted(got) and (not ids or not got or got[0] > ids[-1]), (params, got[:3], ids[-3:])
        ids += got
        cursor = page["next"]
        if cursor is None:
            return ids
    raise AssertionError(f"{params}: the pages never ended")


def in_box(r: dict[str, Any], box: tuple[float, float, float, float]) -> bool:
    lon, lat = r["longitude"], r["latitude"]
    return lon is not None and lat is not None and box[0] <= lon <= box[2] and box[1] <= lat <= box[3]


BOX = (118.2, 35.1, 118.6, 35.45)
CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({}, lambda r: True),
    ({"region": "371311"}, lambda r: (r["region_code"] or "").startswith("371311")),  # with its sub-regions
    ({"region": "37131101"}, lambda r: r["region_code"] == "37131101"),
    ({"status": "ON"}, lambda r: r["status"] == "ON"),
    ({"status": "DEFECT"}, lambda r: r["status"] == "DEFECT"),
    ({"use_type": "2"}, lambda r: r["use_type"] == "2"),
    ({"owner": "公安局"}, lambda r: r["owner"] == "公安局"),
    ({"source": "ledger:b"}, lambda r: "ledger:b" in r["_sources"]),
    ({"tag": "school"}, lambda r: "school" in (r["tags"] or [])),
    ({"tag": ["school", "ring-road"]}, lambda r: {"school", "ring-road"} <= set(r["tags"] or [])),
    ({"bbox": ",".join(map(str, BOX))}, lambda r: in_box(r, BOX)),
    ({"search": "路口12"}, lambda r: "路口12" in r["name"]),
    (
        {"region": "371311", "status": "ON", "use_type": "1", "bbox": ",".join(map(str, BOX))},
        lambda r: (
            (r["region_code"] or "").startswith("371311")
            and r["status"] == "ON"
            and r["use_type"] == "1"
            and in_box(r, BOX)
        ),
    ),
    (
        {"search": "路口1", "source": "ledger:b", "owner": "交通局"},
        lambda r: "路口1" in r["name"] and "ledger:b" in r["_sources"] and r["owner"] == "交通局",
    ),
]


def test_every_filter_gives_what_an_independent_selection_gives(client, every):
    for params, keep in CASES:
        want = [r["id"] for r in every if r["removed_at"] is None and keep(r)]
        assert want or params == {"tag": ["school", "ring-road"]}, params  # the data exercise each filter
        limit = 97 if len(want) > 300 else 7
        assert walk(client, params, limit) == want, params
        first = client.get("/api/v1/cameras", params={**params, "limit": limit}).json()
        if params:  # a filtered list counts up to COUNT_CAP; the whole list's total is the counter (exact)
            assert (first["total"], first["total_exact"]) == (
                min(len(want), repo.COUNT_CAP),
                len(want) <= repo.COUNT_CAP,
            )
        else:
            assert (first["total"], first["total_exact"]) == (len(want), True)


def test_cursor_and_offset_pages_agree_and_bad_input_is_a_422(client, every):
    live = [r["id"] for r in every if r["removed_at"] is None]
    by_offset = client.get("/api/v1/cameras", params={"limit": 50, "offset": 100}).json()
    assert [c["id"] for c in by_offset["items"]] == live[100:150]
    after = client.get("/api/v1/cameras", params={"limit": 50, "cursor": by_offset["next"]}).json()
    assert [c["id"] for c in after["items"]] == live[150:200]  # an offset page's `next` continues by cursor
    for params in (
        {"cursor": "not-a-cursor"},
        {"cursor": "YQ"},  # base64 of "a"
        {"cursor": by_offset["next"], "offset": 5},
        {"bbox": "118,35,119"},
        {"bbox": "119,35,118,36"},  # min above max
        {"bbox": "118,35,119,nan"},
        {"status": "BROKEN"},
        {"fields": "name,password"},
        {"fields": "credential_id"},
        {"tag": ["x" * 65]},
        {"limit": 1001},
    ):
        r = client.get("/api/v1/cameras", params=params)
        assert r.status_code == 422, (params, r.text)
        assert "\n" not in r.json()["detail"]


def test_fields_selects_what_each_item_holds(client, every):
    page = client.get("/api/v1/cameras", params={"fields": "name, status,region_code", "limit": 5}).json()
    assert [set(c) for c in page["items"]] == [{"id", "name", "status", "region_code"}] * 5
    ref = {r["id"]: r for r in every}
    assert all(c["name"] == ref[c["id"]]["name"] for c in page["items"])
    nxt = client.get("/api/v1/cameras", params={"fields": "device_id", "limit": 5, "cursor": page["next"]}).json()
    assert [c["id"] for c in nxt["items"]] == [c["id"] + 5 for c in page["items"]]
    old = client.get("/api/v1/cameras", params={"fields": "device_id", "limit": 5, "offset": 5}).json()
    assert old["items"] == nxt["items"]


def test_no_credential_in_a_list_or_a_camera(client, listed):
    with listed.session(write=False) as s:
        linked = s.execute(text("SELECT count(*) FROM cameras WHERE credential_id IS NOT NULL")).scalar()
    assert linked  # the logins of the stream URLs were kept, in the credential store
    for params in ({"limit": 1000}, {"limit": 1000, "fields": "stream_uri,name"}, {"limit": 100, "offset": 3}):
        body = client.get("/api/v1/cameras", params=params).text
        assert SECRET not in body and "admin:" not in body and "credential_id" not in body
        assert "rtsp://10.1." in body
    one = client.get("/api/v1/cameras/10")
    assert one.status_code == 200 and SECRET not in one.text and "credential_id" not in one.text
    assert one.json()["record"]["stream_uri"] == "rtsp://10.1.0.10:554/h264"


# --- a deep page costs what the first costs ----------------------------------------------------------------


def _sqlite_steps(inv: Inventory, read: Callable[[Any], object]) -> int:
    """The SQLite virtual machine's instructions a read takes (the database's own work, not time)."""
    with inv.session(write=False) as s:
        raw = s.connection().connection.dbapi_connection
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        raw.set_progress_handler(tick, 1)
        try:
            read(s)
        finally:
            raw.set_progress_handler(None, 1)
    return count[0]


def _pg_rows(inv: Inventory, sql: str) -> tuple[int, str]:
    """Rows every node of the plan handled (EXPLAIN ANALYZE): what the read really scanned; and the plan."""
    with inv.session(write=False) as s:
        plan = s.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)).scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def rows(node: dict[str, Any]) -> int:
        own = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
        return own + sum(rows(child) for child in node.get("Plans", []))

    return rows(plan[0]["Plan"]), json.dumps(plan)


LITERAL = {"literal_binds": True}
DEEP_FILTERS = [
    repo.CameraFilter(),
    repo.CameraFilter(status="ON"),
    repo.CameraFilter(status="DEFECT"),
    repo.CameraFilter(owner="公安局", use_type="1"),
    repo.CameraFilter(search="通达路"),  # every camera's address: through the text index
]


@pytest.mark.parametrize("flt", DEEP_FILTERS, ids=["all", "status", "defect", "owner+use_type", "search"])
def test_a_deep_page_reads_what_the_first_reads(listed, every, flt):
    """A page at 90 % of the list (by cursor) does the work of the first page, where an OFFSET page there does
    many times more (the measure would see an OFFSET scan)."""
    limit, cols = 10, ["id", "name"]
    with listed.session(write=False) as s:
        ids = [r["id"] for r in repo.list_cameras(s, flt, columns=["id"])]
    deep_after, deep_offset = ids[int(len(ids) * 0.9) - 1], int(len(ids) * 0.9)
    dialect = listed.engine.dialect.name
    if dialect == "sqlite":

        def keyset(after: int) -> int:
            return _sqlite_steps(listed, lambda s: repo.camera_keyset(s, flt, after=after, limit=limit, columns=cols))

        first, deep = keyset(0), keyset(deep_after)
        by_offset = _sqlite_steps(
            listed, lambda s: repo.list_cameras(s, flt, columns=cols, limit=limit, offset=deep_offset)
        )
        with listed.session(write=False) as s:
            stmt = repo.keyset_statement(flt, after=deep_after, limit=limit, columns=["id"], dialect=dialect)
            compiled = stmt.compile(dialect=listed.engine.dialect, compile_kwargs={"literal_binds": True})
            plan = " | ".join(r[-1] for r in s.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
            unfiltered = repo.keyset_sql(["id", "name"], dialect)
            raw = s.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {unfiltered}", (deep_after, limit)).all()
        # entered at the cursor (the primary key, the removed_at index whose NULL entries are in rowid order, or a
        # filter's index that ends with the id: "status=? AND id>?")
        assert "rowid>?" in " ".join(r[-1] for r in raw), raw
        assert "id>?" in plan, plan
    else:

        def keyset_sql(after: int) -> str:
            if flt == repo.CameraFilter():
                return repo.keyset_sql(["id", "name"], dialect) % {"after": after, "limit": limit}
            stmt = repo.keyset_statement(flt, after=after, limit=limit, columns=["id", "name"], dialect=dialect)
            return str(stmt.compile(dialect=listed.engine.dialect, compile_kwargs=LITERAL))

        (first, _), (deep, plan) = _pg_rows(listed, keyset_sql(0)), _pg_rows(listed, keyset_sql(deep_after))
        assert f"(id > {deep_after})" in plan, plan  # the primary key's index entered at the cursor
        stmt = repo.keyset_statement(flt, after=0, limit=limit, columns=["id", "name"], dialect=dialect)
        stmt = stmt.offset(deep_offset)
        by_offset, _ = _pg_rows(listed, str(stmt.compile(dialect=listed.engine.dialect, compile_kwargs=LITERAL)))
        # On a table this small the planner may read the whole rest of the list (10 %) by a bitmap scan, then sort:
        # still only rows after the cursor. At 100,000 cameras it walks the index as for the first page.
        tail = sum(1 for r in every if r["id"] > deep_after)  # the cameras after the cursor
        first = max(first, 3 * tail)
    assert deep <= first * 1.5 + 20, (dialect, flt, first, deep, by_offset)
    assert by_offset > 3 * deep, (dialect, flt, first, deep, by_offset)  # the measure sees an OFFSET scan


# --- one camera ----------------------------------------------------------------------------------------------


def _jpeg(value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((48, 64, 3), value, dtype=np.uint8))
    assert ok
    return buf.tobytes()


def test_one_camera_with_provenance_health_and_samples(client, listed):
    cid = 50  # listed by both sources (b lists cameras 1, 8, 15, ...); its stream URL carried a login
    health = Health(listed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stages = (StageResult("tcp", True, 1.0), StageResult("rtsp", False, 5.0, "rtsp_auth", f"rtsp://u:{SECRET}@h/x"))
    for hours, outcome in ((6, "ok"), (5, "ok"), (4, "ok"), (3, "defect"), (2, "defect"), (1, "defect")):
        at = now - dt.timedelta(hours=hours)
        sweep = health.start_sweep(["tcp", "rtsp"], at=at)
        result = CheckResult(
            cid,
            at,
            stages if outcome != "ok" else stages[:1],
            outcome,  # type: ignore[arg-type]
            "rtsp" if outcome != "ok" else "tcp",
            "rtsp_auth" if outcome != "ok" else None,
            details={"note": f"tried rtsp://admin:{SECRET}@10.1.0.50/h264", "uri": f"rtsp://a:{SECRET}@h/x"},
        )
        health.record([result], sweep)
    store = SampleStore(listed)
    jpeg = _jpeg(90)
    sha = store.write_jpeg(jpeg)
    row = SampleRow(cid, now, "rtsp", 64, 48, "H264", 10.0, len(jpeg), sha, None, ("blur",))
    (sample_id,) = store.add([row])

    r = client.get(f"/api/v1/cameras/{cid}")
    assert r.status_code == 200, r.text
    assert SECRET not in r.text and "credential_id" not in r.text
    one = r.json()
    assert one["provenance"]["name"]["source"] in {"ledger:a", "ledger:b"}
    assert {s["source"] for s in one["sources"]} == {"ledger:a", "ledger:b"}
    assert one["health"]["latest"]["outcome"] == "defect"
    assert [e["status"] for e in one["health"]["events"]] == ["DEFECT", "ON"], one["health"]["events"]
    assert 0 < one["health"]["online_rate_7d"] < 1
    assert one["samples"][0]["id"] == sample_id and one["samples"][0]["faults"] == ["blur"]

    got = client.get(one["samples"][0]["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg" and got.content == jpeg
    assert client.get("/api/v1/samples/999999.jpg").status_code == 404
    listing = client.get(f"/api/v1/cameras/{cid}/samples").json()
    assert [s["id"] for s in listing["items"]] == [sample_id] and listing["camera_id"] == cid
    assert client.get("/api/v1/cameras/nothing-like-it/samples").status_code == 404
