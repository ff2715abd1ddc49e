"""Identity, merge, provenance and removal against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import func, select

from vms.catalog.domain import Observation, SourceKind
from vms.inventory.ingest import observation_key
from vms.store import repository as repo
from vms.store.models import AuditEntry, cameras

ID1 = "37131100001326000001"
ID2 = "37131100001326000002"


def obs(source, kind, **fields):
    return Observation(source, kind, observation_key(fields), fields)


def ingest(inv, source, kind, items, snapshot=True):
    return inv.ingest_observations(items, source=source, kind=kind, snapshot=snapshot, actor="test")


def count(inv) -> int:
    with inv.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(cameras)) or 0)


def test_same_camera_from_ledger_catalog_and_discovery_is_one_record(inventory):
    L, C, ON = SourceKind.LEDGER, SourceKind.CATALOG, SourceKind.ONVIF
    r = ingest(
        inventory,
        "ledger:police",
        L,
        [
            obs(
                "ledger:police",
                L,
                device_id=ID1,
                name="沂河路口东",
                ip_address="127.0.1.5",
                port=80,
                longitude=118.28,
                latitude=34.99,
            ),
            obs("ledger:police", L, device_id=ID2, name="沂河路口西", ip_address="127.0.1.5", port=80),
        ],
    )
    assert r.cameras_created == 2  # same IP (one encoder), different GB IDs: two cameras
    r = ingest(
        inventory,
        "catalog:platform",
        C,
        [
            obs("catalog:platform", C, device_id=ID1, name="沂河路口东侧", manufacturer="Hikvision"),
        ],
    )
    assert (r.cameras_created, r.cameras_updated) == (0, 1)
    # discovery knows no GB ID; it matches the ledger by address... but both ledger cameras share it,
    # so it joins the oldest one and says so only if keys conflict.
    r = ingest(
        inventory,
        "onvif",
        ON,
        [
            obs(
                "onvif",
                ON,
                endpoint_ref="urn:uuid:abc",
                mac="00:11:22:33:44:55",
                serial_number="SN1",
                manufacturer="Hikvision",
                ip_address="127.0.1.5",
                port=80,
                model="DS-2CD2T47",
            ),
        ],
        snapshot=False,
    )
    assert r.cameras_created == 0
    assert count(inventory) == 2

    shown = inventory.show_camera(ID1)
    assert {s["source"] for s in shown["sources"]} == {"ledger:police", "catalog:platform", "onvif"}
    assert shown["record"]["name"] == "沂河路口东侧"  # catalog outranks ledger
    assert shown["provenance"]["name"]["source"] == "catalog:platform"
    assert shown["provenance"]["name"]["conflicts"] == {
        "catalog:platform": "沂河路口东侧",
        "ledger:police": "沂河路口东",
    }
    assert shown["provenance"]["model"]["source"] == "onvif"
    assert shown["record"]["mac"] == "00:11:22:33:44:55"

    # found again by MAC alone (new address): still the same camera
    r = ingest(
        inventory, "onvif", ON, [obs("onvif", ON, mac="00-11-22-33-44-55", ip_address="127.0.1.9")], snapshot=False
    )
    assert r.cameras_created == 0 and count(inventory) == 2


def test_reingest_changes_nothing_and_removal_marks(inventory):
    L = SourceKind.LEDGER
    items = [obs("ledger:a", L, device_id=ID1, name="东"), obs("ledger:a", L, device_id=ID2, name="西")]
    ingest(inventory, "ledger:a", L, items)
    again = ingest(inventory, "ledger:a", L, items)
    assert not again.changed and again.observations_unchanged == 2

    gone = ingest(inventory, "ledger:a", L, items[:1])
    assert (gone.observations_removed, gone.cameras_removed) == (1, 1)
    assert count(inventory) == 2  # marked, never deleted
    total, rows = inventory.list_cameras(repo.CameraFilter(), limit=10)
    assert total == 1 and rows[0]["device_id"] == ID1
    shown = inventory.show_camera(ID2)
    assert shown["removed_at"] is not None and shown["record"]["name"] == "西"  # history stays

    back = ingest(inventory, "ledger:a", L, items)
    assert back.cameras_restored == 1
    with inventory.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) >= 3


def test_removal_by_one_source_keeps_camera_listed_by_another(inventory):
    L, C = SourceKind.LEDGER, SourceKind.CATALOG
    ingest(inventory, "ledger:a", L, [obs("ledger:a", L, device_id=ID1, name="东")])
    ingest(inventory, "catalog:p", C, [obs("catalog:p", C, device_id=ID1, name="东")])
    r = ingest(inventory, "ledger:a", L, [])
    assert r.observations_removed == 1 and r.cameras_removed == 0
    assert inventory.list_cameras(repo.CameraFilter())[0] == 1


def test_priority_is_configurable(inventory):
    L, C = SourceKind.LEDGER, SourceKind.CATALOG
    ingest(inventory, "ledger:a", L, [obs("ledger:a", L, device_id=ID1, name="台账名")])
    ingest(inventory, "catalog:p", C, [obs("catalog:p", C, device_id=ID1, name="目录名")])
    assert inventory.show_camera(ID1)["record"]["name"] == "目录名"  # default: catalog over ledger
    inventory.settings.source_priority = ["ledger:a", "catalog", "onvif", "api"]  # a named source first
    assert inventory.remerge_all() == 1
    assert inventory.list_cameras(repo.CameraFilter())[1][0]["name"] == "台账名"
    assert inventory.remerge_all() == 0


def test_api_edit_wins_and_is_audited(inventory):
    L = SourceKind.LEDGER
    ingest(inventory, "ledger:a", L, [obs("ledger:a", L, device_id=ID1, name="东", ptz_type="3")])
    shown = inventory.edit_camera(ID1, {"name": "沂河路与通达路交叉口东", "ptz_type": "球机"}, actor="tester")
    assert shown["record"]["name"] == "沂河路与通达路交叉口东"
    assert shown["record"]["ptz_type"] == "1"
    assert shown["provenance"]["name"]["source"] == "api"
    # a later ledger import does not overwrite the operator's correction
    ingest(inventory, "ledger:a", L, [obs("ledger:a", L, device_id=ID1, name="东 ", ptz_type="3")])
    assert inventory.show_camera(ID1)["record"]["name"] == "沂河路与通达路交叉口东"
    with inventory.session(write=False) as s:
        actions = [e.action for e in repo.audit_entries(s)]
    assert "camera.edit" in actions


def test_allocate_ids_per_civil_code_without_collisions(inventory):
    L = SourceKind.LEDGER
    ingest(
        inventory,
        "ledger:a",
        L,
        [
            obs("ledger:a", L, device_id="37131100001326000007", name="已有"),
            obs("ledger:a", L, local_id="A1", name="一", civil_code="371311"),
            obs("ledger:a", L, local_id="A2", name="二", civil_code="371311"),
            obs("ledger:a", L, local_id="B1", name="三", civil_code="371302"),
        ],
    )
    pairs = inventory.allocate_ids().allocated
    ids = sorted(g for _, g in pairs)
    assert ids == ["37130200001326000001", "37131100001326000008", "37131100001326000009"]
    again = inventory.allocate_ids()
    assert again.allocated == [] and again.skipped == []  # nothing left without an ID
    shown = inventory.show_camera("37130200001326000001")
    assert shown["provenance"]["device_id"]["source"] == "gbid-allocator"
