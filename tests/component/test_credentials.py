"""Camera credentials: encrypted at rest, chosen by address range, never shown."""

from __future__ import annotations

from sqlalchemy import select, text

from vms.inventory.credentials import Cipher, add_credential, list_credentials, logins_for
from vms.store import repository as repo
from vms.store.models import Credential


def test_sets_are_encrypted_and_chosen_by_range(inventory):
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session() as s:
        add_credential(s, cipher, name="default", username="admin", password="Default#1", default=True, actor="t")
        add_credential(s, cipher, name="block", username="ops", password="Block#2", scope="127.1.0.0/16", actor="t")
        add_credential(s, cipher, name="one", username="cam", password="One#3", scope="127.1.2.3/32", actor="t")
    with inventory.session(write=False) as s:
        assert [lg.name for lg in logins_for(s, cipher, "127.1.2.3")] == ["one", "block", "default"]
        assert [lg.name for lg in logins_for(s, cipher, "127.9.0.1")] == ["default"]
        login = logins_for(s, cipher, "127.1.9.9")[0]
        assert (login.username, login.password) == ("ops", "Block#2")
        assert "Block#2" not in repr(login)
        raw = b"".join(s.scalars(select(Credential.secret)))
        assert b"Block#2" not in raw and b"Default#1" not in raw
        assert all(not hasattr(c, "password") for c in list_credentials(s))
        dump = " ".join(str(r) for r in s.execute(text("SELECT * FROM credentials")))
        assert "Block#2" not in dump


def test_url_credentials_move_to_the_encrypted_store(inventory, tmp_path):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(
        "设备编码,设备名称,IP地址,视频流地址\n"
        "37131100001326000001,沂河路口,127.1.0.5,rtsp://admin:S3cret%40x@127.1.0.5:554/Streaming/101\n",
        encoding="utf-8",
    )
    inventory.import_file(ledger)
    _, rows = inventory.list_cameras(repo.CameraFilter())
    assert rows[0]["stream_uri"] == "rtsp://127.1.0.5:554/Streaming/101"
    assert rows[0]["credential_id"] is not None
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session(write=False) as s:
        login = logins_for(s, cipher, "127.1.0.5")[0]
        assert (login.username, login.password) == ("admin", "S3cret@x")
        observations = " ".join(str(r) for r in s.execute(text("SELECT fields FROM observations")))
        assert "S3cret" not in observations
        audit = " ".join(str(e.details) for e in repo.audit_entries(s))
        assert "S3cret" not in audit


def test_login_query_parameters_are_kept_encrypted_not_in_the_url(inventory, tmp_path):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(
        "设备编码,设备名称,IP地址,抓图地址\n"
        "37131100001326000002,通达路口,127.1.0.6,http://127.1.0.6/cgi-bin/snapshot.cgi?channel=1&user=ops&password=Q%26x\n",
        encoding="utf-8",
    )
    inventory.import_file(ledger)
    _, rows = inventory.list_cameras(repo.CameraFilter())
    assert rows[0]["snapshot_uri"] == "http://127.1.0.6/cgi-bin/snapshot.cgi?channel=1"
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session(write=False) as s:
        login = logins_for(s, cipher, "127.1.0.6")[0]
    assert (login.username, login.password) == ("ops", "Q&x")
