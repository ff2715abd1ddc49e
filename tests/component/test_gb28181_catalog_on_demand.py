"""A Catalog query on demand through the API: POST /api/v1/gb28181/devices/{id}/catalog (operate scope, audited)
stores the request; the GbService running the SIP server (here in this process, on 127.0.0.1 port 0) takes it
within a second or two and asks the device (a raw SIP device over UDP, tests/gb28181.py); GET the device follows it
to the answer. Unknown (404), offline (409), a read key (403), no server taking the request, a device that never
answers (catalog_error). SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from api.app import create_app
from probes.gb28181.message import SipMessage
from tests.gb28181 import PASSWORD, RawDevice, until
from vms.access.apikeys import create_key
from vms.errors import VmsError
from vms.gb28181.devices import device, request_catalog, wait_catalog
from vms.gb28181.service import GbService
from vms.inventory.service import Inventory
from vms.store.models import AuditEntry, cameras

NVR = "37131100001180000011"
CHANNEL = "37131100001320000041"


def _until(check: Callable[[], object], timeout: float = 10.0) -> object:
    return until(check, timeout)


def _ok(dev: RawDevice, msg: SipMessage) -> None:
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in msg.get_all("Via")), f"From: {msg.get('From')}",
             f"To: {msg.get('To')};tag=dev-1", f"Call-ID: {msg.get('Call-ID')}", f"CSeq: {msg.get('CSeq')}",
             "Content-Length: 0"]
    dev.send(("\r\n".join(lines) + "\r\n\r\n").encode())


def answer_query(dev: RawDevice) -> None:
    """Take the platform's Catalog query, answer it 200 and with one page (one camera, a GB2312 name)."""
    query = dev.recv()
    assert query.method == "MESSAGE" and b"<CmdType>Catalog</CmdType>" in query.body
    _ok(dev, query)
    sn = re.search(rb"<SN>(\d+)</SN>", query.body).group(1).decode()  # type: ignore[union-attr]
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response><CmdType>Catalog</CmdType><SN>{sn}</SN>'
            f'<DeviceID>{NVR}</DeviceID><SumNum>1</SumNum><DeviceList Num="1"><Item><DeviceID>{CHANNEL}</DeviceID>'
            f"<Name>罗庄区沂河桥</Name><CivilCode>371311</CivilCode><ParentID>{NVR}</ParentID><Status>ON</Status>"
            "</Item></DeviceList></Response>\r\n").encode("gb2312")
    dev.send(dev.request("MESSAGE", headers=[("Content-Type", "Application/MANSCDP+xml")], body=body))
    for _ in range(10):  # its 200 (a retransmitted query meanwhile: answered again)
        msg = dev.recv()
        if not msg.is_request:
            assert msg.status == 200
            return
        _ok(dev, msg)
    raise AssertionError("no 200 to the catalog page")


def _inventory(inventory: Inventory) -> Inventory:
    settings = inventory.settings.model_copy(
        update={"gb28181_password": SecretStr(PASSWORD), "gb28181_allow": ["3713110000"],
                "gb28181_catalog_interval_s": 0.0}
    )
    return Inventory(settings, engine=inventory.engine)


def test_catalog_on_demand_through_the_api(inventory):
    inv = _inventory(inventory)
    operator = {"X-API-Key": create_key(inv, "ops", "operate", actor="test")}
    reader = {"X-API-Key": create_key(inv, "viewer", "read", actor="test")}
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, catalog_quiet_s=1.0, subscribe=False)
    service.server.query_catalog_on_register = False
    service.start()
    dev = RawDevice("udp", service.udp_port or 0, NVR)
    dev.sock.settimeout(10.0)
    try:
        with TestClient(create_app(inv), base_url="http://127.0.0.1:8000") as client:
            url = f"/api/v1/gb28181/devices/{NVR}/catalog"
            assert client.post(url, headers=operator).status_code == 404  # never registered
            assert client.get(f"/api/v1/gb28181/devices/{NVR}").status_code == 404
            assert dev.register().status == 200
            assert _until(lambda: client.get(f"/api/v1/gb28181/devices/{NVR}").status_code == 200)
            assert _until(lambda: client.get(f"/api/v1/gb28181/devices/{NVR}").json()["online"])
            assert client.post(url, headers=reader).status_code == 403
            assert client.post(url).status_code == 401
            assert client.post("/api/v1/gb28181/devices/not-an-id!/catalog", headers=operator).status_code in (404, 422)

            started = time.monotonic()
            reply = client.post(url, headers=operator)
            assert reply.status_code == 202, reply.text
            body = reply.json()
            assert reply.headers["Location"] == body["follow"] == f"/api/v1/gb28181/devices/{NVR}"
            answer_query(dev)  # the running server took the request and asked the device
            picked = time.monotonic() - started

            def answered() -> dict | None:
                row = client.get(body["follow"]).json()
                return row if row["catalog_at"] and row["catalog_at"] >= body["requested_at"] else None

            row = _until(answered)
            assert row, client.get(body["follow"]).json()
            assert isinstance(row, dict)
            assert (row["catalog_items"], row["catalog_complete"], row["channels"]) == (1, True, 1)
            assert row["catalog_requested_at"] is None and row["catalog_error"] is None
            with inv.engine.connect() as conn:
                name = conn.execute(select(cameras.c.name).where(cameras.c.device_id == CHANNEL)).scalar()
            assert name == "罗庄区沂河桥"
            print(f"catalog request taken and sent to the device {picked:.1f} s after the POST")

            # a device that never answers: the failure is recorded for whoever follows
            service.server.t1 = 0.02  # timer F: 1.3 s
            since = request_catalog(inv, NVR, actor="test")
            dev.recv()  # the query (and its retransmissions: ignored)
            with pytest.raises(VmsError, match="catalog query failed: no answer"):
                wait_catalog(inv, NVR, since, timeout=15)
            assert device(inv, NVR)["catalog_error"]

            # unregistered: offline, 409
            again = RawDevice("udp", service.udp_port or 0, NVR)  # (the old socket holds the retransmissions)
            try:
                assert again.register(expires=0).status == 200
            finally:
                again.close()
            assert _until(lambda: not client.get(f"/api/v1/gb28181/devices/{NVR}").json()["online"])
            refused = client.post(url, headers=operator)
            assert refused.status_code == 409 and "offline" in refused.text
    finally:
        dev.close()
        service.stop()
    with inv.session(write=False) as s:
        audits = s.execute(
            select(AuditEntry.actor, AuditEntry.target, AuditEntry.address).where(
                AuditEntry.action == "gb28181.catalog"
            ).order_by(AuditEntry.id)
        ).all()
    assert [(a.actor, a.target) for a in audits] == [("apikey:ops", f"gb28181:{NVR}"), ("test", f"gb28181:{NVR}")]
    assert audits[0].address == "testclient"


def test_a_request_no_server_takes_is_a_clear_error(inventory):
    """Nothing runs the SIP server on this database: the request stays pending; waiting says so."""
    inv = _inventory(inventory)
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, subscribe=False)
    service.server.query_catalog_on_register = False
    service.start()
    dev = RawDevice("udp", service.udp_port or 0, NVR)
    try:
        assert dev.register().status == 200
        assert _until(lambda: device(inv, NVR)["online"] if _exists(inv) else False)
    finally:
        dev.close()
        service.stop()
    since = request_catalog(inv, NVR, actor="test")
    with pytest.raises(VmsError, match="no GB/T 28181 SIP server took the catalog request within 1 s"):
        wait_catalog(inv, NVR, since, timeout=1.0)
    assert device(inv, NVR)["catalog_requested_at"] is not None


def _exists(inv: Inventory) -> bool:
    try:
        device(inv, NVR)
    except VmsError:
        return False
    return True
