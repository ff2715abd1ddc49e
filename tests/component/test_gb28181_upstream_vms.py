"""vms's cascade upward (vms.gb28181.upstream): the inventory as Catalog items (no credential, no extra column), and
GbService registering to an upper platform from VMS_GB28181_UPSTREAM_* (our GbServer plays the platform) and
answering its Catalog query with the inventory; the state file `vms gb28181 upstream` reads. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from pydantic import SecretStr

from probes.gb28181.manscdp import parse_manscdp
from tests.gb28181 import MemoryDirectory, ServerThread, wait_for
from vms.gb28181.service import GbService
from vms.gb28181.upstream import UPSTREAM_CREDENTIAL, catalog_items, read_status, upstream_config
from vms.inventory.credentials import Cipher, add_credential
from vms.inventory.service import Inventory

LOCAL_ID = "37131100002000000001"
UP_ID = "37000000002000000001"
IDS = [f"371311000013200000{n:02d}" for n in range(1, 8)]


def _ledger(path: Path) -> Path:
    rows = ["device_id,name,address,ip_address,username,password,longitude,latitude,remark"]
    rows += [f"{d},罗庄区路口{n},通达路{n}号,10.9.0.{n},admin,Secret-Cam-{n},118.28,34.99,vendor-note-{n}"
             for n, d in enumerate(IDS, start=1)]
    rows.append(",无编号摄像机,沂河路,10.9.0.99,admin,Secret-Cam-99,118.29,34.98,x")  # no GB ID: not sent upward
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _upstream(inventory: Inventory, port: int, transport: str, **extra: object) -> Inventory:
    settings = inventory.settings.model_copy(update={
        "gb28181_upstream_host": "127.0.0.1", "gb28181_upstream_port": port,
        "gb28181_upstream_transport": transport, "gb28181_upstream_id": UP_ID,
        "gb28181_upstream_keepalive_s": 0.5, "gb28181_upstream_batch": 3, **extra,
    })  # fmt: skip
    return Inventory(settings, engine=inventory.engine)


def test_inventory_items_carry_catalog_fields_and_no_credential(inventory: Inventory, tmp_path: Path) -> None:
    inventory.import_file(_ledger(tmp_path / "ledger.csv"))
    items = catalog_items(inventory)
    text = "".join(items)
    assert len(items) == len(IDS)
    assert sorted(re.findall(r"<DeviceID>(\d{20})</DeviceID>", text)) == IDS
    assert "罗庄区路口3" in text and "<IPAddress>10.9.0.3</IPAddress>" in text
    assert "Secret-Cam" not in text and "admin" not in text  # no login, ever
    assert "vendor-note" not in text and "Ext" not in text  # no extra columns (the export's vms:Ext)


def test_upstream_is_off_without_a_host_and_takes_the_credential_set(inventory: Inventory) -> None:
    assert upstream_config(inventory) is None
    with inventory.session() as s:
        add_credential(s, Cipher(inventory.settings.fernet_key()), name=UPSTREAM_CREDENTIAL,
                       username=LOCAL_ID, password="from-the-store", actor="test")
    cfg = upstream_config(_upstream(inventory, 5999, "tcp"))
    assert cfg is not None and cfg.password == "from-the-store" and cfg.transport == "tcp"
    assert cfg.upstream_domain == UP_ID[:10] and cfg.local_id == inventory.settings.gb28181_id
    cfg = upstream_config(_upstream(inventory, 5999, "udp", gb28181_upstream_password=SecretStr("setting")))
    assert cfg is not None and cfg.password == "setting"  # the setting wins


def test_service_registers_upward_and_answers_with_the_inventory(inventory: Inventory, tmp_path: Path) -> None:
    inventory.import_file(_ledger(tmp_path / "ledger.csv"))
    directory = MemoryDirectory(passwords={LOCAL_ID: "up-pw"})
    with ServerThread(directory, catalog_quiet_s=2.0) as platform:
        inv = _upstream(inventory, platform.port("tcp"), "tcp", gb28181_upstream_password=SecretStr("up-pw"))
        service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, subscribe=False)
        assert service.upstream is not None
        service.start()
        try:
            assert wait_for(lambda: bool(directory.registrations), 10)
            answer = platform.call(platform.server.query_catalog(LOCAL_ID), timeout=20)
            assert answer.complete and answer.sum_num == len(IDS) == answer.items
            assert len(answer.documents) == math.ceil(len(IDS) / 3)
            assert {parse_manscdp(d).sn for d in answer.documents} == {answer.sn}
            got = re.findall(rb"<DeviceID>(\d{20})</DeviceID>", b"".join(answer.documents))
            assert sorted({g.decode() for g in got} - {LOCAL_ID}) == IDS
            assert "罗庄区路口1".encode("gb2312") in b"".join(answer.documents)  # GB2312 by default
            assert wait_for(lambda: (read_status(inv.settings) or {}).get("catalog_messages") == 3, 20)
            status = read_status(inv.settings)
            assert status is not None and status["state"] == "registered"
            assert status["upstream"] == f"{UP_ID}@127.0.0.1:{platform.port('tcp')}/tcp"
            assert "up-pw" not in json.dumps(status)
        finally:
            service.stop()
        assert wait_for(lambda: bool(directory.unregistrations), 20)
        assert (read_status(inv.settings) or {}).get("state") == "stopped"


def test_service_keeps_retrying_a_platform_that_refuses(inventory: Inventory) -> None:
    directory = MemoryDirectory(passwords={})  # knows nobody: 403
    with ServerThread(directory, max_failed_auth=1000) as platform:
        inv = _upstream(inventory, platform.port("udp"), "udp", gb28181_upstream_password=SecretStr("x"))
        service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, subscribe=False)
        service.start()
        try:
            time.sleep(1.5)
            status = read_status(inv.settings)
        finally:
            service.stop()
    assert status is not None and status["state"] == "retrying" and "403" in status["last_error"]
    assert platform.server.stats["register_403"] <= 2  # back-off from 2 s: no tight loop
