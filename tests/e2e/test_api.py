"""The HTTP API over a real database: lists, stats, quality, auth, and no credentials in responses."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.component.test_import_files import write_ledger
from vms.access.apikeys import create_key


@pytest.fixture
def client(inventory, tmp_path):
    ledger = tmp_path / "ledger.csv"
    write_ledger(ledger)
    with ledger.open("a", encoding="utf-8") as fh:
        fh.write("37131100001326000008,带密码的点位,118.27,34.99,371311,1,127.0.1.8,80,30\n")
    inventory.import_file(ledger, column_map={})
    inventory.edit_camera("37131100001326000008", {"stream_uri": "rtsp://admin:secret@127.0.1.8:554/ch1"}, actor="test")
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as c:  # a Host the API answers
        yield c


def test_lists_stats_and_quality(client):
    r = client.get("/api/v1/cameras", params={"limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5 and len(body["items"]) == 2
    stats = client.get("/api/v1/stats", params={"by": "status"}).json()
    assert stats["total"] == 5
    quality = client.get("/api/v1/quality").json()
    assert quality["total"] == 5 and 0 <= quality["pass_rate"] <= 1
    assert client.get("/api/v1/stats", params={"by": "colour"}).status_code == 422
    assert client.get("/api/v1/cameras/99999").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text


def test_no_credentials_in_responses(client):
    shown = client.get("/api/v1/cameras/37131100001326000008").json()
    assert shown["record"]["stream_uri"] == "rtsp://127.0.1.8:554/ch1"
    listing = client.get("/api/v1/cameras", params={"limit": 100}).text
    assert "secret" not in listing and "admin:" not in listing
    assert "credential_id" not in listing


def test_writes_need_a_write_key(client, inventory):
    body = {"fields": {"name": "沂河路口东北角"}}
    assert client.patch("/api/v1/cameras/37131100001326000001", json=body).status_code == 401
    reader = create_key(inventory, "dashboard", "read", actor="test")
    writer = create_key(inventory, "ops", "write", actor="test")
    assert (
        client.patch("/api/v1/cameras/37131100001326000001", json=body, headers={"X-API-Key": reader}).status_code
        == 403
    )
    assert (
        client.patch("/api/v1/cameras/37131100001326000001", json=body, headers={"X-API-Key": "vms_forged"}).status_code
        == 401
    )
    r = client.patch("/api/v1/cameras/37131100001326000001", json=body, headers={"X-API-Key": writer})
    assert r.status_code == 200 and r.json()["record"]["name"] == "沂河路口东北角"
    bad = client.patch(
        "/api/v1/cameras/37131100001326000001", json={"fields": {"colour": "red"}}, headers={"X-API-Key": writer}
    )
    assert bad.status_code == 422
    with inventory.session(write=False) as s:
        from vms.store import repository as repo

        entries = repo.audit_entries(s)
        assert any(e.action == "camera.edit" and e.actor == "apikey:ops" for e in entries)
        from sqlalchemy import select

        from vms.store.models import ApiKey

        hashes = list(s.scalars(select(ApiKey.key_hash)))
        assert writer not in hashes and len(hashes) == 2


def test_answers_are_private_to_the_key(client):
    # A shared cache between the command system and us must never hand one key's answer to another client.
    for path in ("/api/v1/cameras", "/api/v1/stats", "/metrics"):
        r = client.get(path)
        assert r.headers["vary"] == "X-API-Key" and r.headers["cache-control"] == "private, no-cache", path
    assert "private" not in client.get("/static/app.js").headers.get("cache-control", "")
