"""Login columns of department ledgers (用户名/密码, username/password, ...): moved to the encrypted credential store
for the row's IP address at import, never stored with the cameras (records, observations, raw digests, import
reports), and never shown (API list, one camera, exports, `vms export`, `vms cameras show`) even when an import
from before their recognition left them in a record's extra columns. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import LargeBinary, MetaData, select, update

from api.app import create_app
from tests.e2e.cli import run_vms, vms_env
from vms.catalog.columns import ColumnMap, login_free, login_role
from vms.inventory.credentials import LOGIN_NO_HOST, Cipher, logins_for
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.models import cameras as cameras_table

PW = ("Zq7xLedgerPw11", "Zq7xLedgerPw12", "Zq7xLedgerPw13")  # no host for the third: dropped

LEDGERS = {
    "zh-utf8": ("utf-8", "设备编码,设备名称,IP地址,用户名,密码,通过率,备注"),
    "zh-gb18030": ("gb18030", "设备编码,设备名称,IP地址,登录名,登录密码,通过率,备注"),
    "en": ("utf-8", "device_id,name,ip_address,Username,Password,pass_rate,passage"),
}


def write_ledger(path: Path, variant: str, passwords: tuple[str, ...] = PW) -> Path:
    encoding, header = LEDGERS[variant]
    rows = [
        f"37131100001326000011,沂河路口,127.1.0.11,admin,{passwords[0]},98%,东门",
        f"37131100001326000012,通达路口,127.1.0.12,ops,{passwords[1]},97%,西门",
        f"37131100001326000013,无地址路口,,guest,{passwords[2]},96%,南门",
    ]
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return path


def stored_text(inv: Inventory) -> str:
    """Every value of every table (compressed blobs such as stored import reports inflated), as one text."""
    meta = MetaData()
    meta.reflect(inv.engine)
    parts: list[str] = []
    with inv.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        raw = bytes(value)
                        with contextlib.suppress(zlib.error):
                            raw = zlib.decompress(raw)
                        parts.append(raw.decode("utf-8", "replace"))
                    else:
                        parts.append(str(value))
    assert any(isinstance(c.type, LargeBinary) for c in meta.tables["credentials"].columns)
    return "\n".join(parts)


def assert_nowhere(inv: Inventory, *secrets: str) -> None:
    text = stored_text(inv)
    for secret in secrets:
        assert secret not in text
    url = inv.settings.url
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        blob = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
        for secret in secrets:
            assert secret.encode() not in blob


@pytest.mark.parametrize("variant", list(LEDGERS))
def test_login_columns_go_to_the_credential_store_only(inventory: Inventory, tmp_path: Path, variant: str) -> None:
    ledger = write_ledger(tmp_path / f"{variant}.csv", variant)
    report = inventory.import_file(ledger)
    assert report.accepted == 3 and report.logins_stored == 2
    assert report.as_dict()["logins_stored"] == 2
    codes = [i.code for i in report.issues]
    assert codes.count(LOGIN_NO_HOST) == 1 and "LOGIN-COLUMNS" in codes
    no_host = next(i for i in report.issues if i.code == LOGIN_NO_HOST)
    assert not no_host.fatal and no_host.line == 4 and "dropped" in no_host.reason
    assert not any(pw in json.dumps(report.as_dict(), ensure_ascii=False, default=str) for pw in PW)

    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session(write=False) as s:
        for host, user, pw in (("127.1.0.11", "admin", PW[0]), ("127.1.0.12", "ops", PW[1])):
            login = logins_for(s, cipher, host)[0]
            assert (login.name, login.username, login.password) == (f"ledger:{host}", user, pw)
    assert_nowhere(inventory, *PW)

    _, rows = inventory.list_cameras(repo.CameraFilter())
    by_ip = {r["ip_address"]: r for r in rows}
    assert by_ip["127.1.0.11"]["credential_id"] is not None
    # Columns that only look like logins land as extra columns as before.
    _, header = LEDGERS[variant]
    rate, note = header.split(",")[-2:]
    assert by_ip["127.1.0.11"]["extra"] == {rate: "98%", note: "东门"}
    assert all(login_role(k) is None for r in rows for k in (r["extra"] or {}))

    # Read again (a file with login columns has no raw digests): a changed password replaces the stored one.
    changed = ("Zq7xLedgerPw21", *PW[1:])
    report = inventory.import_file(write_ledger(tmp_path / f"{variant}.csv", variant, changed))
    assert report.logins_stored == 2
    with inventory.session(write=False) as s:
        assert logins_for(s, cipher, "127.1.0.11")[0].password == "Zq7xLedgerPw21"
    assert_nowhere(inventory, *changed, *PW)


def test_header_recognition_is_exact() -> None:
    for header in ("用户名", "密码", "口令", "登录密码", "Password", "PASSWD", "pwd", "pass", "User Name", "login",
                   "账号", "帐号", "密码（必填）", "密码 (2)"):  # fmt: skip
        assert login_role(header) is not None, header
    for header in (
        "通过率",
        "pass rate",
        "pass_rate",
        "passage",
        "password hint count",
        "用户单位",
        "登录时间",
        "备注",
    ):
        assert login_role(header) is None, header
    plan = ColumnMap().plan(["设备编码", "IP地址", "用户名", "密码", "口令", "通过率"])
    assert sorted(plan.logins.values()) == ["password", "username"] and list(plan.extra.values()) == ["通过率"]
    assert 4 in plan.ignored  # a second password column is dropped, never kept as extra
    # An operator's own mapping of a header wins over the recognition.
    assert ColumnMap({"账号": "local_id"}).plan(["账号"]).fields == {0: "local_id"}
    extra = {"备注": "x"}
    assert login_free(extra) is extra and login_free({"密码": "p", "备注": "x"}) == {"备注": "x"}


LEGACY = "Zq7xLegacyPw99"


def legacy_camera(inventory: Inventory, tmp_path: Path) -> None:
    """A camera whose extra columns hold a login, as an import from before login columns were recognised left it."""
    ledger = tmp_path / "old.csv"
    ledger.write_text("设备编码,设备名称,IP地址,备注\n37131100001326000021,老路口,127.1.0.21,北门\n", encoding="utf-8")
    inventory.import_file(ledger)
    with inventory.session() as s:
        s.execute(update(cameras_table).values(extra={"密码": LEGACY, "User Name": "olduser", "备注": "北门"}))


def test_logins_left_in_extra_are_never_shown(inventory: Inventory, tmp_path: Path) -> None:
    legacy_camera(inventory, tmp_path)
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as client:
        answers = [
            client.get("/api/v1/cameras"),
            client.get("/api/v1/cameras", params={"fields": "id,name,extra"}),
            client.get("/api/v1/cameras/37131100001326000021"),
            *(client.get("/api/v1/cameras/export", params={"format": f}) for f in ("csv", "geojson", "gb28181")),
        ]
    for r in answers:
        assert r.status_code == 200, r.text
        assert LEGACY not in r.text and "olduser" not in r.text
    assert answers[0].json()["items"][0]["extra"] == {"备注": "北门"}
    assert "北门" in answers[3].text  # the other extra columns are exported as before
    for suffix in ("csv", "geojson", "xml"):  # what `vms export` writes
        out = tmp_path / f"out.{suffix}"
        assert inventory.export(out) == 1
        text = out.read_text(encoding="utf-8-sig")
        assert LEGACY not in text and "olduser" not in text and "北门" in text
    shown = inventory.show_camera("37131100001326000021")
    assert shown["extra"] == {"备注": "北门"}


def test_cli_show_and_export_leave_legacy_logins_out(inventory: Inventory, tmp_path: Path) -> None:
    legacy_camera(inventory, tmp_path)
    env = vms_env(inventory.settings, tmp_path)
    shown = run_vms(env, "cameras", "show", "37131100001326000021", "--json")
    assert shown.returncode == 0, shown.stderr
    assert LEGACY not in shown.stdout and "olduser" not in shown.stdout and "北门" in shown.stdout
    out = tmp_path / "cli.csv"
    exported = run_vms(env, "export", str(out))
    assert exported.returncode == 0, exported.stderr
    assert LEGACY not in out.read_text(encoding="utf-8-sig")


def test_half_logins_and_catalog_passwords_are_dropped(inventory: Inventory, tmp_path: Path) -> None:
    """A password without a user name is never stored nor tried (it would only spend the device's lockout budget);
    a GB/T 28181 catalog's <Password> element (the SIP registration password) is dropped the same way."""
    ledger = tmp_path / "half.csv"
    ledger.write_text(
        "设备编码,设备名称,IP地址,密码\n"
        "37131100001326000031,半登录一,127.1.0.31,Zq7xHalfPw31\n"
        "37131100001326000032,半登录二,127.1.0.32,Zq7xHalfPw32\n",
        encoding="utf-8",
    )
    report = inventory.import_file(ledger)
    assert report.accepted == 2 and report.logins_stored == 0
    half = [i for i in report.issues if i.code == "LOGIN-INCOMPLETE"]
    assert len(half) == 1 and half[0].line == 2 and "1 more" in half[0].reason
    catalog = tmp_path / "catalog.xml"
    catalog.write_text(
        '<?xml version="1.0" encoding="GB2312"?>\n<Response><CmdType>Catalog</CmdType><SN>1</SN>'
        '<DeviceID>37131100002000000001</DeviceID><SumNum>1</SumNum><DeviceList Num="1"><Item>'
        "<DeviceID>37131100001320000041</DeviceID><Name>Gate</Name><IPAddress>127.1.0.41</IPAddress>"
        "<Password>Zq7xSipPw41</Password></Item></DeviceList></Response>\n",
        encoding="utf-8",
    )
    report = inventory.import_file(catalog, source="platform")
    assert report.accepted == 1 and report.logins_stored == 0
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session(write=False) as s:
        assert logins_for(s, cipher, "127.1.0.31") == logins_for(s, cipher, "127.1.0.41") == []
    assert_nowhere(inventory, "Zq7xHalfPw31", "Zq7xHalfPw32", "Zq7xSipPw41")
