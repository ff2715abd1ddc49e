"""vms.gb28181: the registry behind the SIP server, driven with the server's event dataclasses
(probes.gb28181.api): passwords and allowed IDs, registry rows, offline deadlines through the health status and
events, catalog answers and notices merged into the inventory, restart from last_seen. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from pydantic import SecretStr
from sqlalchemy import select

from probes.gb28181.api import CatalogAnswer, CatalogNotice, Keepalive, Peer, Registration, Unregistration
from probes.health.results import CheckResult, StageResult
from vms.catalog.domain import Observation, SourceKind
from vms.gb28181.devices import list_devices
from vms.gb28181.registry import GbDirectory
from vms.health.service import Health
from vms.ingest.importers import read_catalog_documents
from vms.inventory import changes
from vms.inventory.credentials import Cipher, add_credential
from vms.inventory.ingest import observation_key
from vms.inventory.service import Inventory
from vms.store.models import CatalogNode, cameras, gb_devices, health_events, health_latest

NVR = "37131100001180000001"  # an NVR (type 118) registering with its channels
CAM_A = "37131100001326000011"
CAM_B = "37131100001326000012"
CAM_C = "37131100001326000013"
PEER = Peer("udp", "127.0.0.1", 5070)


def _catalog(items: list[tuple[str, str, str]], sum_num: int, sn: int = 7, encoding: str = "GB2312") -> bytes:
    body = "".join(
        f"<Item><DeviceID>{d}</DeviceID><Name>{n}</Name><Manufacturer>Hikvision</Manufacturer>"
        f"<CivilCode>371311</CivilCode><ParentID>{NVR}</ParentID><Status>{s}</Status>"
        "<Longitude>118.35</Longitude><Latitude>35.05</Latitude></Item>"
        for d, n, s in items
    )
    xml = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<Response><CmdType>Catalog</CmdType><SN>{sn}</SN>'
        f'<DeviceID>{NVR}</DeviceID><SumNum>{sum_num}</SumNum><DeviceList Num="{len(items)}">{body}</DeviceList>'
        "</Response>\n"
    )
    return xml.encode("gb18030" if encoding.upper().startswith("GB") else encoding)


def _notice(items: list[tuple[str, str, str]]) -> bytes:
    body = "".join(
        f"<Item><DeviceID>{d}</DeviceID><Name>{n}</Name><CivilCode>371311</CivilCode><Event>{e}</Event></Item>"
        for d, n, e in items
    )
    return (
        '<?xml version="1.0" encoding="GB2312"?>\n<Notify><CmdType>Catalog</CmdType><SN>9</SN>'
        f"<DeviceID>{NVR}</DeviceID><SumNum>{len(items)}</SumNum><DeviceList>{body}</DeviceList></Notify>"
    ).encode("gb18030")


def _directory(inventory: Inventory, **settings) -> GbDirectory:
    defaults = {"gb28181_allow": ["3713110000"], "gb28181_keepalive_interval_s": 10.0, "gb28181_keepalive_count": 3}
    inv = Inventory(inventory.settings.model_copy(update={**defaults, **settings}), engine=inventory.engine)
    directory = GbDirectory(inv)
    directory.load()
    return directory


def _status(inventory: Inventory, device_id: str) -> str | None:
    with inventory.engine.connect() as conn:
        return conn.execute(select(cameras.c.status).where(cameras.c.device_id == device_id)).scalar_one()


def _events(inventory: Inventory) -> list[tuple[str, str, str | None, str | None]]:
    e, c = health_events.c, cameras.c
    with inventory.engine.connect() as conn:
        rows = conn.execute(
            select(c.device_id, e.event, e.stage, e.cause).join(cameras, c.id == e.camera_id).order_by(e.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_passwords_come_from_the_credential_store_for_allowed_ids_only(inventory):
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session() as s:
        add_credential(s, cipher, name=f"gb28181:{CAM_A}", username=CAM_A, password="own-secret", actor="test")
        add_credential(s, cipher, name="gb28181:*", username="domain", password="domain-secret", actor="test")
    known = "44030500001320000001"  # outside the allowed prefix, but a known camera's GB ID
    obs = Observation("ledger", SourceKind.LEDGER, f"id:{known}", {"device_id": known, "name": "Known gate"})
    inventory.ingest_observations([obs], source="ledger", kind=SourceKind.LEDGER, snapshot=False, actor="test")
    d = _directory(inventory)
    assert d.password_for(CAM_A) == "own-secret"
    assert d.password_for(CAM_B) == "domain-secret"  # allowed by the prefix, domain password
    assert d.password_for(known) == "domain-secret"
    assert d.password_for("11010000001320000001") is None  # unknown and not allowed: 403
    # a camera registering itself: the registry names it and links its record
    d.registered(Registration(known, "4403050000", PEER, 3600, dt.datetime.now(dt.UTC)))
    d.process()
    [dev] = list_devices(d.inventory)
    assert dev["name"] == "Known gate" and dev["camera_id"] is not None
    d2 = _directory(inventory, gb28181_allow=[], gb28181_password=SecretStr("from-settings"))
    assert d2.password_for(CAM_B) is None
    assert d2.password_for(known) == "from-settings"  # the setting wins over the credential set


def test_register_catalog_keepalive_timeout_and_back(inventory):
    d = _directory(inventory)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    d.registered(Registration(NVR, "3713110000", PEER, 3600, t0, user_agent="IVMS"))
    d.process(now=t0)
    with inventory.engine.connect() as conn:
        row = conn.execute(select(gb_devices).where(gb_devices.c.device_id == NVR)).one()
    assert row.online and row.host == "127.0.0.1" and row.port == 5070 and row.transport == "udp"
    assert row.keepalive_interval_s == 10.0 and row.keepalive_count == 3
    # a catalog split over two MESSAGEs, GB2312 names; one channel OFF
    docs = (
        _catalog([(CAM_A, "罗庄区通达路口", "ON"), (CAM_B, "罗庄区沂河桥", "OFF")], 3),
        _catalog([(CAM_C, "罗庄区政府东门", "ON"), ("37131100002150000001", "罗庄分局", "ON")], 3),
    )
    d.catalog(CatalogAnswer(NVR, 7, 3, docs, 4, True, t0))
    d.process(now=t0)
    with inventory.engine.connect() as conn:
        names = dict(conn.execute(select(cameras.c.device_id, cameras.c.name)).all())
        node = conn.execute(select(CatalogNode.name).where(CatalogNode.device_id == "37131100002150000001")).one()
    assert names == {CAM_A: "罗庄区通达路口", CAM_B: "罗庄区沂河桥", CAM_C: "罗庄区政府东门"}
    assert node.name == "罗庄分局"  # a business group: a tree node, not a camera
    assert _status(inventory, CAM_B) == "OFF" and _status(inventory, CAM_A) == "ON"
    assert sorted(_events(inventory)) == sorted(
        [
            (CAM_A, "ON", "catalog", "catalog_status"),
            (CAM_C, "ON", "catalog", "catalog_status"),
            (CAM_B, "OFF", "catalog", "catalog_status"),
        ]
    )
    [dev] = list_devices(d.inventory)
    assert dev["channels"] == 3 and dev["online"] and dev["catalog_items"] == 4 and dev["catalog_complete"]
    head = changes.page(d.inventory, 0, 500).head
    # keepalives keep it online; missing 3 x 10 s makes it OFF, at its deadline
    t1 = t0 + dt.timedelta(seconds=10)
    d.keepalive(Keepalive(NVR, PEER, t1, sn=1, status="OK"))
    d.process(now=t1 + dt.timedelta(seconds=29))
    assert d.device(NVR).online
    d.process(now=t1 + dt.timedelta(seconds=31))
    assert not d.device(NVR).online
    offs = [e for e in _events(inventory) if e[2] == "keepalive"]
    assert sorted(offs) == sorted([(c, "OFF", "keepalive", "keepalive_timeout") for c in (CAM_A, CAM_C)])
    assert {_status(inventory, c) for c in (CAM_A, CAM_B, CAM_C)} == {"OFF"}
    feed = changes.page(d.inventory, head, 500).items  # the change feed carries the status changes
    assert sorted((i["op"], i["record"]["device_id"], i["record"]["status"]) for i in feed) == [
        ("status", CAM_A, "OFF"),
        ("status", CAM_C, "OFF"),
    ]
    with inventory.engine.connect() as conn:
        at = conn.execute(
            select(health_events.c.at).where(health_events.c.cause == "keepalive_timeout").limit(1)
        ).scalar_one()
    assert at.replace(tzinfo=dt.UTC) == t1 + dt.timedelta(seconds=30)
    # a keepalive brings it back: each channel to what its catalog said (CAM_B stays OFF)
    t2 = t1 + dt.timedelta(seconds=60)
    d.keepalive(Keepalive(NVR, PEER, t2, sn=2))
    d.process(now=t2)
    assert (
        _status(inventory, CAM_A) == "ON" and _status(inventory, CAM_C) == "ON" and _status(inventory, CAM_B) == "OFF"
    )
    backs = [e for e in _events(inventory) if e[3] == "keepalive"]
    assert sorted(backs) == sorted([(CAM_A, "ON", "keepalive", "keepalive"), (CAM_C, "ON", "keepalive", "keepalive")])
    # Expires: 0
    d.unregistered(Unregistration(NVR, PEER, t2 + dt.timedelta(seconds=1)))
    d.process(now=t2 + dt.timedelta(seconds=1))
    assert _status(inventory, CAM_A) == "OFF"
    assert (CAM_A, "OFF", "register", "unregistered") in _events(inventory)
    # a late answer from a device that is offline: merged, its channels stay OFF (no new event)
    late = (_catalog([(CAM_A, "罗庄区通达路口北", "ON"), (CAM_B, "罗庄区沂河桥", "ON")], 3), docs[1])
    d.catalog(CatalogAnswer(NVR, 8, 3, late, 4, True, t2 + dt.timedelta(seconds=2)))
    d.process(now=t2 + dt.timedelta(seconds=2))
    assert {_status(inventory, c) for c in (CAM_A, CAM_B, CAM_C)} == {"OFF"}
    assert not [e for e in _events(inventory) if e[3] == "offline"]
    [dev] = list_devices(d.inventory)
    assert not dev["online"]


def test_a_restart_recomputes_deadlines_from_last_seen(inventory):
    d = _directory(inventory)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    other = "37131100001320000099"
    d.registered(Registration(CAM_A, "3713110000", PEER, 3600, t0))
    d.registered(Registration(other, "3713110000", PEER, 3600, t0))
    d.process(now=t0)
    d.keepalive(Keepalive(CAM_A, PEER, t0 + dt.timedelta(seconds=25)))
    d.process(now=t0 + dt.timedelta(seconds=25))
    # vms restarts 10 s later: neither is overdue yet (deadlines t0+30 and t0+55), nothing goes OFF
    d2 = _directory(inventory)
    d2.process(now=t0 + dt.timedelta(seconds=26))
    assert d2.device(CAM_A).online and d2.device(other).online
    assert d2.device(CAM_A).offline_deadline == t0 + dt.timedelta(seconds=55)
    # a restart after a longer stop: the device that stayed silent goes OFF at its own deadline, not at the restart
    d3 = _directory(inventory)
    assert d3.check_deadlines(t0 + dt.timedelta(seconds=40)) == [other]
    assert d3.device(CAM_A).online
    d3.process(now=t0 + dt.timedelta(seconds=40))
    with inventory.engine.connect() as conn:
        online = dict(conn.execute(select(gb_devices.c.device_id, gb_devices.c.online)).all())
    assert online == {CAM_A: True, other: False}


def test_incomplete_answers_remove_nothing_and_notices_change_channels(inventory):
    d = _directory(inventory)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    d.registered(Registration(NVR, "3713110000", PEER, 3600, t0))
    three = [(CAM_A, "通达路口", "ON"), (CAM_B, "沂河桥", "ON"), (CAM_C, "政府东门", "ON")]
    d.catalog(CatalogAnswer(NVR, 1, 3, (_catalog(three, 3),), 3, True, t0))
    d.process(now=t0)
    # an answer closed by the quiet period with one item: nothing removed
    d.catalog(CatalogAnswer(NVR, 2, 3, (_catalog(three[:1], 3),), 1, False, t0))
    d.process(now=t0)
    assert list_devices(d.inventory)[0]["channels"] == 3
    assert list_devices(d.inventory)[0]["catalog_complete"] is False
    # notices: DEL removes from the source, ADD merges, VLOST / OFF are statuses
    new = "37131100001326000014"
    doc = _notice(
        [(CAM_C, "政府东门", "DEL"), (new, "新增点位", "ADD"), (CAM_A, "通达路口", "VLOST"), (CAM_B, "沂河桥", "OFF")]
    )
    d.notice(CatalogNotice(NVR, doc, ((CAM_C, "DEL"), (new, "ADD"), (CAM_A, "VLOST"), (CAM_B, "OFF")), t0))
    d.process(now=t0)
    with inventory.engine.connect() as conn:
        rows = {r.device_id: r for r in conn.execute(select(cameras.c.device_id, cameras.c.removed_at, cameras.c.name))}
    assert rows[CAM_C].removed_at is not None and rows[new].name == "新增点位" and rows[new].removed_at is None
    assert _status(inventory, CAM_A) == "DEFECT" and _status(inventory, CAM_B) == "OFF"
    assert (CAM_A, "VLOST", "catalog", "notify") in _events(inventory)
    # a complete answer without CAM_B removes it from this source
    d.catalog(CatalogAnswer(NVR, 3, 2, (_catalog([three[0], (new, "新增点位", "ON")], 2),), 2, True, t0))
    d.process(now=t0)
    assert list_devices(d.inventory)[0]["channels"] == 2


def test_read_catalog_documents_decodes_each_body_by_its_declaration():
    docs = [
        _catalog([(CAM_A, "罗庄区通达路口", "ON")], 2, encoding="GB2312"),
        _catalog([(CAM_B, "罗庄区沂河桥", "OFF")], 2, encoding="UTF-8"),
    ]
    read = read_catalog_documents(docs)
    assert [(r.fields["device_id"], r.fields["name"]) for r in read.accepted] == [
        (CAM_A, "罗庄区通达路口"),
        (CAM_B, "罗庄区沂河桥"),
    ]
    short = read_catalog_documents(docs[:1])
    assert any(i.code == "CATALOG-INCOMPLETE" for i in short.issues)


def test_health_signal_sets_status_at_once_and_a_sweep_continues_from_it(inventory):
    obs = [Observation("ledger", SourceKind.LEDGER, observation_key({"local_id": "x"}), {"local_id": "x", "name": "X"})]
    inventory.ingest_observations(obs, source="ledger", kind=SourceKind.LEDGER, snapshot=True, actor="test")
    with inventory.engine.connect() as conn:
        cid = conn.execute(select(cameras.c.id)).scalar_one()
    health = Health(inventory)
    t0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert health.signal([cid], "ON", t0, stage="register", cause="registered") == 1
    assert health.signal([cid], "ON", t0 + dt.timedelta(seconds=5), stage="keepalive") == 0  # no change, no event
    assert health.signal([cid], "OFF", t0 + dt.timedelta(hours=1), stage="keepalive", cause="keepalive_timeout") == 1
    with inventory.engine.connect() as conn:
        latest = conn.execute(select(health_latest).where(health_latest.c.camera_id == cid)).one()
        status = conn.execute(select(cameras.c.status).where(cameras.c.id == cid)).scalar_one()
    assert latest.status == "OFF" and status == "OFF" and latest.pending is None
    # a sweep after it: two good checks (VMS_HEALTH_RECOVER_COUNT=2) to be ON again, as from any OFF
    sweep = health.start_sweep(["tcp"])
    ok = (StageResult("tcp", True, 1.0, None),)
    for i in (1, 2):
        at = t0 + dt.timedelta(hours=1, minutes=i)
        summary = health.record([CheckResult(cid, at, ok, "ok", "tcp")], sweep)
        sweep = health.start_sweep(["tcp"])
        assert summary.events == (1 if i == 2 else 0)
    assert [e["event"] for e in health.events(camera_id=cid)] == ["ON", "OFF", "ON"]
    rate = health.online_rate(t0, t0 + dt.timedelta(hours=1, minutes=2), camera_id=cid)
    assert rate.known_s == 3720 and rate.online_s == 3600 + 0  # ON an hour, OFF 2 minutes
