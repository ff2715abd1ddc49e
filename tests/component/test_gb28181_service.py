"""vms.gb28181 end to end over SIP: a real GbServer (127.0.0.1, port 0) with vms's registry, a device registering
with digest (tests/gb28181.py RawDevice), keepalives, a catalog answered in two MESSAGEs with GB2312 names merged
into the inventory, the keepalive timeout with short intervals (OFF events) and back (ON), a restart that keeps
last_seen; and `vms run`'s start of the server going on when the SIP port is taken. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import socket
from collections.abc import Callable

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from api.app import create_app
from probes.gb28181.message import SipMessage
from tests.gb28181 import PASSWORD, RawDevice, until
from vms.gb28181.devices import list_devices
from vms.gb28181.registry import GbDirectory
from vms.gb28181.service import GbService
from vms.inventory.service import Inventory
from vms.store.models import cameras, health_events

NVR = "37131100001180000007"
CHANNELS = ("37131100001326000021", "37131100001326000022", "37131100001326000023")
NAMES = ("罗庄区通达路口", "罗庄区沂河桥", "罗庄区政府东门")


def _inventory(inventory: Inventory, **extra: object) -> Inventory:
    settings = inventory.settings.model_copy(
        update={
            "gb28181_password": SecretStr(PASSWORD),
            "gb28181_allow": ["3713110000"],
            # offline 4 s after the last keepalive: long enough for the catalog's merge on a loaded machine
            "gb28181_keepalive_interval_s": 2.0,
            "gb28181_keepalive_count": 2,
            "gb28181_catalog_interval_s": 0.0,
            **extra,
        }
    )
    return Inventory(settings, engine=inventory.engine)


def _until(check: Callable[[], object], timeout: float = 15.0) -> object:
    return until(check, timeout)


def _ok(msg: SipMessage) -> bytes:
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in msg.get_all("Via"))]
    lines += [f"From: {msg.get('From')}", f"To: {msg.get('To')};tag=dev-1", f"Call-ID: {msg.get('Call-ID')}"]
    lines += [f"CSeq: {msg.get('CSeq')}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(dev: RawDevice) -> SipMessage:
    """The next response; a request from the server meanwhile (a retransmitted query) is answered 200."""
    for _ in range(10):
        msg = dev.recv()
        if not msg.is_request:
            return msg
        dev.send(_ok(msg))
    raise AssertionError("no response")


def _page(sn: str, items: list[tuple[str, str]]) -> bytes:
    body = "".join(
        f"<Item><DeviceID>{d}</DeviceID><Name>{n}</Name><Manufacturer>Dahua</Manufacturer><CivilCode>371311"
        f"</CivilCode><ParentID>{NVR}</ParentID><Status>ON</Status></Item>"
        for d, n in items
    )
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response><CmdType>Catalog</CmdType><SN>{sn}</SN>'
        f'<DeviceID>{NVR}</DeviceID><SumNum>3</SumNum><DeviceList Num="{len(items)}">{body}</DeviceList>'
        "</Response>\r\n"
    ).encode("gb18030")


def _events(inv: Inventory, cause: str) -> list[str]:
    e, c = health_events.c, cameras.c
    with inv.engine.connect() as conn:
        rows = conn.execute(select(c.device_id, e.event).join(cameras, c.id == e.camera_id).where(e.cause == cause))
        return sorted(f"{d}:{ev}" for d, ev in rows)


def test_a_device_registers_answers_its_catalog_times_out_and_comes_back(inventory):
    inv = _inventory(inventory)
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, catalog_quiet_s=1.0, subscribe=False)
    service.start()
    dev = RawDevice("udp", service.udp_port or 0, NVR)
    try:
        assert dev.register().status == 200
        query = dev.recv()  # the Catalog query the server sends after the registration
        assert query.method == "MESSAGE" and b"<CmdType>Catalog</CmdType>" in query.body
        dev.send(_ok(query))
        sn = re.search(rb"<SN>(\d+)</SN>", query.body).group(1).decode()  # type: ignore[union-attr]
        pages = [list(zip(CHANNELS[:2], NAMES[:2], strict=True)), [(CHANNELS[2], NAMES[2])]]
        for page in pages:
            dev.send(
                dev.request("MESSAGE", headers=[("Content-Type", "Application/MANSCDP+xml")], body=_page(sn, page))
            )
            assert _response(dev).status == 200

        def names() -> dict[str, str]:
            with inv.engine.connect() as conn:
                return dict(conn.execute(select(cameras.c.device_id, cameras.c.name)).all())

        assert _until(lambda: len(names()) == 3)
        assert names() == dict(zip(CHANNELS, NAMES, strict=True))
        [row] = _until(lambda: [d for d in list_devices(inv) if d["channels"] == 3])  # type: ignore[misc]
        assert row["device_id"] == NVR and row["online"] and row["transport"] == "udp" and row["port"] == dev.port
        assert row["catalog_complete"] and row["catalog_items"] == 3
        with inv.engine.connect() as conn:
            sources = conn.execute(
                select(cameras.c.device_id).where(cameras.c.status == "ON", cameras.c.device_id.in_(CHANNELS))
            ).all()
        assert len(sources) == 3
        # keepalives, then silence: 2 x 2 s later the device and its channels are OFF
        dev.send(dev.keepalive(1))
        assert _response(dev).status == 200
        offs = _until(lambda: _events(inv, "keepalive_timeout"))
        assert offs == [f"{c}:OFF" for c in CHANNELS]
        dev.send(dev.keepalive(2))
        assert _response(dev).status == 200
        assert _until(lambda: _events(inv, "keepalive")) == [f"{c}:ON" for c in CHANNELS]
        before = service.directory.device(NVR).last_seen  # type: ignore[union-attr]
        dev.send(dev.keepalive(3))  # and vms stops less than a second later
        assert _response(dev).status == 200
        assert _until(lambda: service.directory.device(NVR).last_seen != before)  # type: ignore[union-attr]
        last_seen = service.directory.device(NVR).last_seen  # type: ignore[union-attr]
    finally:
        dev.close()
        service.stop()
    # the API: the devices, and the camera record names the device it is reached through
    with TestClient(create_app(inv), base_url="http://127.0.0.1:8000") as client:
        body = client.get("/api/v1/gb28181/devices").json()
        assert body["total"] == 1 and body["items"][0]["device_id"] == NVR and body["items"][0]["channels"] == 3
        assert client.get("/api/v1/gb28181/devices?online=false").json()["total"] == 1 - body["online"]
        record = client.get(f"/api/v1/cameras/{CHANNELS[0]}").json()
        assert [d["source"] for d in record["gb28181"]] == [f"gb28181:{NVR}"]
        assert f"gb28181:{NVR}" in {s["source"] for s in record["sources"]}
        assert PASSWORD not in client.get("/api/v1/gb28181/devices").text
    # vms restarts: last_seen as it was, the deadline computed again from it
    again = GbDirectory(inv)
    again.load()
    state = again.device(NVR)
    assert state is not None and state.last_seen == last_seen
    assert state.offline_deadline == last_seen + dt.timedelta(seconds=4)  # type: ignore[operator]


def test_registered_devices_are_asked_for_their_catalog_again_on_a_schedule(inventory):
    inv = _inventory(inventory, gb28181_catalog_interval_s=1.0, gb28181_keepalive_interval_s=60.0)
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, catalog_quiet_s=0.5, subscribe=False)
    service.start()
    dev = RawDevice("udp", service.udp_port or 0, NVR)
    sns: list[str] = []
    try:
        assert dev.register().status == 200
        for _ in range(8):  # the query after the registration, then a scheduled one about a second later
            if len(sns) == 2:
                break
            query = dev.recv()
            while not (query.method == "MESSAGE" and b"Catalog" in query.body):
                query = dev.recv()
            dev.send(_ok(query))
            sn = re.search(rb"<SN>(\d+)</SN>", query.body).group(1).decode()  # type: ignore[union-attr]
            if sn in sns:
                continue  # a retransmission of the same query
            sns.append(sn)
            body = _page(sn, list(zip(CHANNELS, NAMES, strict=True)))
            dev.send(dev.request("MESSAGE", headers=[("Content-Type", "Application/MANSCDP+xml")], body=body))
            assert _response(dev).status == 200
        first = _until(lambda: service.directory.device(NVR).catalog_at)  # type: ignore[union-attr]
        assert len(sns) == 2 and first
    finally:
        dev.close()
        service.stop()
    [row] = list_devices(inv)
    assert row["channels"] == 3 and row["catalog_complete"]


def test_a_subscribed_device_notifies_catalog_changes(inventory):
    inv = _inventory(inventory, gb28181_keepalive_interval_s=60.0)
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, catalog_quiet_s=0.5, subscribe=True)
    service.start()
    dev = RawDevice("udp", service.udp_port or 0, NVR)
    seen: set[str] = set()
    try:
        assert dev.register().status == 200
        for _ in range(10):  # the Catalog query after the registration and the SUBSCRIBE, in either order
            if seen == {"catalog", "subscribe"}:
                break
            msg = dev.recv()
            if not msg.is_request:
                continue
            dev.send(_ok(msg))
            if msg.method == "SUBSCRIBE":
                seen.add("subscribe")
            elif msg.method == "MESSAGE" and "catalog" not in seen:
                seen.add("catalog")
                sn = re.search(rb"<SN>(\d+)</SN>", msg.body).group(1).decode()  # type: ignore[union-attr]
                body = _page(sn, list(zip(CHANNELS, NAMES, strict=True)))
                dev.send(dev.request("MESSAGE", headers=[("Content-Type", "Application/MANSCDP+xml")], body=body))
        assert seen == {"catalog", "subscribe"}
        assert _until(lambda: [d for d in list_devices(inv) if d["channels"] == 3])
        events = [(CHANNELS[0], "VLOST"), (CHANNELS[1], "OFF"), (CHANNELS[2], "DEL")]
        items = "".join(f"<Item><DeviceID>{c}</DeviceID><Event>{e}</Event></Item>" for c, e in events)
        notify = (
            '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify><CmdType>Catalog</CmdType><SN>77</SN>'
            f'<DeviceID>{NVR}</DeviceID><SumNum>3</SumNum><DeviceList Num="3">{items}</DeviceList></Notify>\r\n'
        ).encode()
        headers = [("Event", "Catalog"), ("Subscription-State", "active"), ("Content-Type", "Application/MANSCDP+xml")]
        dev.send(dev.request("NOTIFY", headers=headers, body=notify))
        assert _response(dev).status == 200
        assert _until(lambda: _events(inv, "notify") == [f"{CHANNELS[0]}:VLOST", f"{CHANNELS[1]}:OFF"])
        assert _until(lambda: list_devices(inv)[0]["channels"] == 2)  # DEL: no longer listed by the device
    finally:
        dev.close()
        service.stop()
    assert service.server.stats["subscribe_ok"] == 1


def test_vms_run_goes_on_when_the_sip_port_is_taken(inventory, capsys):
    from vms.cli.main import _start_gb28181

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        inv = _inventory(inventory, gb28181_port=taken.getsockname()[1])
        assert _start_gb28181(inv) is None
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert "GB/T 28181 SIP server not started" in err and "going on without it" in err
