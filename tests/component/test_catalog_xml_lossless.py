"""GB/T 28181 Catalog XML export re-imports without loss (README promise), on SQLite and PostgreSQL: every field
of the registry and extra columns with Chinese keys, from one inventory through `export` into a fresh one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from lxml import etree

from tests.conftest import fresh_database
from vms.catalog.fields import BY_NAME, CATALOG_FIELDS, FIELD_NAMES
from vms.ingest.catalog_ext import EXT_NS, EXT_TAG
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

FULL: dict[str, Any] = {
    "device_id": "37131100001326000123",
    "name": '罗庄区沂河路与湖北路交叉口东 <北> & "南"',
    "manufacturer": "海康威视",
    "model": "DS-2DE4425IW-DE(T5)",
    "owner": "临沂市公安局罗庄分局",
    "civil_code": "371311001",
    "block": "罗庄派出所一警区",
    "address": "山东省临沂市罗庄区沂河路与湖北路交叉口东50米",
    "parental": "0",
    "parent_id": "37131100002000000001",
    "register_way": "1",
    "secrecy": "0",
    "ip_address": "10.37.13.11",
    "port": 8000,
    "status": "ON",
    "longitude": 118.2918345,
    "latitude": 35.0512001,
    "ptz_type": "1",
    "room_type": "1",
    "supply_light_type": "2",
    "direction_type": "5",
    "position_type": "10",
    "use_type": "2",
    "resolution": "5/6",
    "point_type": "1",
    "point_common_name": "湖北路口",
    "mac": "00:1a:2b:3c:4d:5e",
    "function_type": "01/03",
    "horizontal_field_angle": 90.5,
    "vertical_field_angle": 45.25,
    "max_view_distance": 120.0,
    "install_time": "2023-05-06",
    "management_unit": "罗庄分局科技通信科",
    "contact_info": "0539-8221234",
    "record_save_days": 90,
    "photoelectric_imaging_type": "1/2",
    "local_id": "LZ-湖北路-0001",
    "serial_number": "DS-2DE4425IW20230506AACH123456789",
    "firmware_version": "V5.7.3 build 220112",
    "hardware_id": "88",
    "endpoint_ref": "urn:uuid:1c852a4d-b800-1f08-abcd-001a2b3c4d5e",
    "device_service_url": "http://10.37.13.11/onvif/device_service",
    "services": {"device": "http://10.37.13.11/onvif/device_service", "media": "http://10.37.13.11/onvif/Media"},
    "media_profiles": [{"token": "Profile_1", "encoding": "H264", "width": 1920, "height": 1080}],
    "stream_uri": "rtsp://10.37.13.11:554/Streaming/Channels/101",
    "snapshot_uri": "http://10.37.13.11/ISAPI/Streaming/channels/101/picture",
    "auth_method": "digest",
}
FULL_EXTRA = {
    "备注": "东侧立杆，高6米 <新装> & 已验收",
    "所属项目": "雪亮工程二期",
    "安装高度(米)": "6.5",
    "地址": "另一个地址",  # also a header spelling of `address`: must stay an extra column
    "序号": "1",
    "column 12": '=HYPERLINK("http://x")',
}
# A department's point that has only its department number and a name (no GB ID yet).
LOCAL_ONLY: dict[str, Any] = {
    "local_id": "LZ-0002",
    "name": "傅庄街道办事处北门",
    "snapshot_uri": "http://10.37.13.12/snap.jpg",
}
LOCAL_ONLY_EXTRA = {"备注": "待分配国标编码"}


def test_sample_covers_every_field() -> None:
    assert set(FULL) == set(FIELD_NAMES)


@pytest.fixture
def fresh_inventory(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inventory]:
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"  # a second database, same backend
    for url in fresh_database(request, backend, tmp_path / "fresh.sqlite3"):
        settings = Settings(
            database_url=url,
            data_dir=tmp_path / "fresh",
            secret_key=Fernet.generate_key().decode(),
            governed_region="371311",
            _env_file=None,
        )
        inv = Inventory(settings)
        inv.upgrade()
        try:
            yield inv
        finally:
            inv.engine.dispose()


def _records(inv: Inventory) -> dict[str, dict[str, Any]]:
    _, rows = inv.list_cameras(repo.CameraFilter(), limit=None)
    return {str(r["local_id"]): {**{k: r[k] for k in FIELD_NAMES}, "extra": r["extra"] or {}} for r in rows}


def test_catalog_xml_export_reimports_every_field_and_extra(
    inventory: Inventory, fresh_inventory: Inventory, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.json"
    ledger.write_text(
        json.dumps(
            {"cameras": [{**FULL, "extra": FULL_EXTRA}, {**LOCAL_ONLY, "extra": LOCAL_ONLY_EXTRA}]},
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    first = inventory.import_file(ledger)
    assert (first.accepted, first.rejected) == (2, 0)
    before = _records(inventory)
    assert {k: v for k, v in before["LZ-湖北路-0001"].items() if k != "extra"} == FULL
    assert before["LZ-湖北路-0001"]["extra"] == FULL_EXTRA

    exported = tmp_path / "catalog.xml"
    assert inventory.export(exported, fmt="xml") == 2

    rep = fresh_inventory.import_file(exported)
    assert rep.kind.value == "catalog"
    assert (rep.accepted, rep.rejected, rep.result.cameras_created) == (2, 0, 2)
    assert [i for i in rep.issues if i.fatal] == []
    after = _records(fresh_inventory)
    assert after == before
    assert after["LZ-0002"] == {**{k: None for k in FIELD_NAMES}, **LOCAL_ONLY, "extra": LOCAL_ONLY_EXTRA}

    # A second export from the fresh inventory is the same document: nothing drifts on further round trips.
    again = tmp_path / "again.xml"
    fresh_inventory.export(again, fmt="xml")
    assert again.read_bytes() == exported.read_bytes()


def test_plain_gbt28181_parser_still_sees_standard_items(inventory: Inventory, tmp_path: Path) -> None:
    """A platform that knows only the standard: plain lxml, no namespaces, unknown elements ignored."""
    ledger = tmp_path / "ledger.json"
    ledger.write_text(json.dumps([{**FULL, "extra": FULL_EXTRA}], ensure_ascii=False), encoding="utf-8")
    inventory.import_file(ledger)
    exported = tmp_path / "catalog.xml"
    inventory.export(exported, fmt="xml")

    root = etree.parse(str(exported), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    assert root.tag == "Response" and root.findtext("CmdType") == "Catalog" and root.findtext("SumNum") == "1"
    items = root.findall("DeviceList/Item")
    assert len(items) == 1
    item = items[0]
    standard = {f.xml: f for f in CATALOG_FIELDS}
    seen: dict[str, str] = {}
    for child in item.iter():
        if isinstance(child.tag, str) and child.tag in standard:
            seen[child.tag] = child.text or ""
    # Every catalog field is where the standard puts it, with the value a platform expects.
    assert set(seen) == set(standard)
    assert seen["DeviceID"] == FULL["device_id"] and seen["Name"] == FULL["name"]
    assert item.findtext("Info/PTZType") == "1" and item.findtext("Longitude") == "118.2918345"
    # The extension is one namespaced element that such a parser skips: no un-namespaced strays.
    unknown = [c.tag for c in item if c.tag not in standard and c.tag != "Info"]
    assert unknown == [EXT_TAG]
    ext = item[-1]
    assert etree.QName(ext).namespace == EXT_NS
    assert all(etree.QName(c).namespace == EXT_NS for c in ext.iter() if isinstance(c.tag, str))
    assert {etree.QName(c).localname for c in ext} >= {"local_id", "snapshot_uri", "stream_uri", "Extra"}
    assert not any(BY_NAME[f.name].xml is None for f in standard.values())
