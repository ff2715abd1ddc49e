"""API key scopes read < operate < admin: 401 without a key (reads closed), 403 below the scope needed, every write
audited with the key's name and the client's address, keys stored only as hashes, old "write" keys become operate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from alembic import command
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, insert, inspect, select, text

from api.app import create_app
from api.deps import Caller, operate_access, read_access, require_reader, require_writer
from tests.component.test_import_files import write_ledger
from vms.access.apikeys import SCOPES, allows, authenticate, create_key, list_keys, normalise_scope, revoke_key
from vms.errors import Conflict, ValidationFailed
from vms.store import repository as repo
from vms.store.db import alembic_config
from vms.store.models import ApiKey, AuditEntry

CAMERA = "37131100001326000001"
ADDRESS = ("10.20.30.40", 51234)  # the client address the ASGI server reports (TestClient puts it in the scope)


@pytest.fixture
def closed(inventory, tmp_path):
    """The app over a small ledger with reads closed (VMS_API_OPEN_READS=false), and a key of each scope."""
    ledger = tmp_path / "ledger.csv"
    write_ledger(ledger)
    inventory.import_file(ledger, column_map={})
    inventory.settings = inventory.settings.model_copy(update={"api_open_reads": False})
    keys = {scope: create_key(inventory, f"k-{scope}", scope, actor="test") for scope in SCOPES}
    keys["write"] = create_key(inventory, "old-writer", "write", actor="test")  # the former role: operate
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000", client=ADDRESS) as c:
        yield c, keys


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_scopes_refuse_and_audit_with_name_and_address(closed, inventory):
    client, keys = closed
    body = {"fields": {"name": "沂河路口东北角"}}
    # Reads: closed, so no key is 401 (as is a forged one); any key reads.
    assert client.get("/api/v1/cameras").status_code == 401
    assert client.get("/api/v1/cameras", headers=_h("vms_forged")).status_code == 401
    assert client.get("/api/v1/cameras", headers=_h("x" * 5000)).status_code == 401
    for scope in SCOPES:
        assert client.get("/api/v1/cameras", headers=_h(keys[scope])).status_code == 200, scope
    assert client.get("/api/v1/whoami", headers=_h(keys["operate"])).json() == {
        "actor": "apikey:k-operate",
        "name": "k-operate",
        "scope": "operate",
        "address": ADDRESS[0],
    }
    # Writes: no key 401, a read key 403 (and nothing changes), operate and admin keys edit.
    assert client.patch(f"/api/v1/cameras/{CAMERA}", json=body).status_code == 401
    refused = client.patch(f"/api/v1/cameras/{CAMERA}", json=body, headers=_h(keys["read"]))
    assert refused.status_code == 403 and "operate" in refused.json()["detail"]
    assert inventory.show_camera(CAMERA)["record"]["name"] != body["fields"]["name"]
    r = client.patch(f"/api/v1/cameras/{CAMERA}", json=body, headers=_h(keys["operate"]))
    assert r.status_code == 200 and r.json()["record"]["name"] == "沂河路口东北角"
    r = client.patch(f"/api/v1/cameras/{CAMERA}", json={"fields": {"name": "旧钥匙"}}, headers=_h(keys["write"]))
    assert r.status_code == 200  # a key made as "write" operates
    assert client.patch(f"/api/v1/cameras/{CAMERA}", json=body, headers=_h(keys["admin"])).status_code == 200
    # The audit row says who (the key's name), what, when and from where (the client's address).
    with inventory.session(write=False) as s:
        edits = [e for e in repo.audit_entries(s) if e.action == "camera.edit"]
    assert [e.actor for e in edits] == ["apikey:k-admin", "apikey:old-writer", "apikey:k-operate"]
    assert all(e.address == ADDRESS[0] and e.at is not None and e.details == {"fields": ["name"]} for e in edits)
    # The audit log is for admins only.
    assert client.get("/api/v1/audit").status_code == 401
    for scope in ("read", "operate", "write"):
        assert client.get("/api/v1/audit", headers=_h(keys[scope])).status_code == 403, scope
    log = client.get("/api/v1/audit", params={"limit": 2}, headers=_h(keys["admin"])).json()
    assert [e["actor"] for e in log["items"]] == ["apikey:k-admin", "apikey:old-writer"]
    assert log["items"][0]["address"] == ADDRESS[0] and log["items"][0]["target"]
    older = client.get("/api/v1/audit", params={"before": log["next"]}, headers=_h(keys["admin"])).json()
    assert older["items"][0]["actor"] == "apikey:k-operate" and older["next"] is None
    # A revoked key is refused at once.
    revoke_key(inventory, "k-operate", actor="test")
    assert client.patch(f"/api/v1/cameras/{CAMERA}", json=body, headers=_h(keys["operate"])).status_code == 401
    assert client.get("/api/v1/cameras", headers=_h(keys["operate"])).status_code == 401


def test_keys_are_stored_hashed_only(closed, inventory, settings):
    client, keys = closed
    assert client.get("/api/v1/whoami", headers=_h(keys["read"])).status_code == 200  # records a use
    listed = {k["name"]: k for k in list_keys(inventory)}
    assert {n: k["scope"] for n, k in listed.items()} == {
        "k-read": "read",
        "k-operate": "operate",
        "k-admin": "admin",
        "old-writer": "operate",
    }
    # A use is recorded to the minute: a second one within it writes nothing.
    first = listed["k-read"]["last_used_at"]
    assert first is not None and listed["k-admin"]["last_used_at"] is None
    assert authenticate(inventory, keys["read"]).scope == "read"
    assert {k["name"]: k for k in list_keys(inventory)}["k-read"]["last_used_at"] == first
    # The raw key is in no column of any table, nor (SQLite) anywhere in the database's files.
    meta = MetaData()
    meta.reflect(inventory.engine)
    with inventory.engine.connect() as conn:
        dump = repr([conn.execute(select(t)).all() for t in meta.sorted_tables])
        hashes = set(conn.scalars(select(ApiKey.key_hash)))
    assert len(hashes) == 4
    for key in keys.values():
        assert key not in dump and key.removeprefix("vms_") not in dump
    if settings.database_url.startswith("sqlite"):
        path = Path(settings.database_url.split("///", 1)[1])
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert not any(key.encode() in stored for key in keys.values())


def test_scope_names_and_key_names_are_checked(inventory):
    assert [normalise_scope(s) for s in ("read", "Operate", "write", "admin ")] == [
        "read",
        "operate",
        "operate",
        "admin",
    ]
    with pytest.raises(ValidationFailed, match="scope must be one of read, operate, admin"):
        normalise_scope("root")
    assert allows("admin", "operate") and allows("operate", "read") and allows("write", "operate")
    assert not allows("read", "operate") and not allows("operate", "admin") and not allows("bogus", "read")
    for bad in ("", "two words", "x" * 129, "-leading", "semi;colon"):
        with pytest.raises(ValidationFailed):
            create_key(inventory, bad, "read", actor="test")
    key = create_key(inventory, "巡检平台", "operate", actor="cli", address="cli@host-a")
    assert authenticate(inventory, key).scope == "operate"
    with pytest.raises(Conflict):
        create_key(inventory, "巡检平台", "read", actor="cli")
    with inventory.session(write=False) as s:
        (entry,) = repo.audit_entries(s)
    assert (entry.actor, entry.action, entry.address, entry.details) == (
        "cli",
        "apikey.create",
        "cli@host-a",
        {"scope": "operate"},
    )


def test_any_route_behind_an_access_dependency_audits_from_the_client_address(inventory):
    """Routes of other parts (operations, ...) audit without passing the address: the dependency sets it for the
    request (the sync endpoint runs in a worker thread with a copy of the request's context)."""
    operator = create_key(inventory, "ops", "operate", actor="test")
    reader = create_key(inventory, "dash", "read", actor="test")
    app = FastAPI()
    app.state.inventory = inventory

    @app.post("/op")
    def op(caller: Annotated[Caller, Depends(operate_access)]) -> dict[str, Any]:
        with inventory.session() as s:
            repo.audit(s, actor=caller.actor(), action="operation.start", target="sweep")
        return {"actor": caller.actor()}

    @app.get("/legacy")
    def legacy(
        reader_name: Annotated[str, Depends(require_reader)], who: Annotated[Caller, Depends(read_access)]
    ) -> dict[str, Any]:
        return {"reader": reader_name, "scope": who.scope}

    @app.post("/legacy-write")
    def legacy_write(actor: Annotated[str, Depends(require_writer)]) -> dict[str, Any]:
        return {"actor": actor}

    from api.app import STATUS_OF
    from vms.errors import VmsError

    @app.exception_handler(VmsError)
    def _error(_request: Any, exc: VmsError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(
            {"detail": str(exc)}, status_code=next(v for k, v in STATUS_OF.items() if isinstance(exc, k))
        )

    with TestClient(app, client=("192.0.2.7", 40000)) as c:
        assert c.post("/op", headers=_h(operator)).json() == {"actor": "apikey:ops"}
        assert c.post("/op", headers=_h(reader)).status_code == 403
        assert c.get("/legacy").json() == {"reader": "anonymous", "scope": "read"}  # reads are open by default
        assert c.get("/legacy", headers=_h(reader)).json() == {"reader": "dash", "scope": "read"}
        assert c.post("/legacy-write", headers=_h(operator)).json() == {"actor": "apikey:ops"}
        assert c.post("/legacy-write", headers=_h(reader)).status_code == 403
    with inventory.session(write=False) as s:
        (entry,) = [e for e in repo.audit_entries(s) if e.action == "operation.start"]
    assert (entry.actor, entry.address) == ("apikey:ops", "192.0.2.7")
    assert repo.AUDIT_ADDRESS.get() is None  # nothing leaks out of a request


def test_migrating_an_old_write_key_makes_it_operate(inventory):
    engine = inventory.engine
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0014_trials")
    engine.dispose()
    assert "role" in {c["name"] for c in inspect(engine).get_columns("api_keys")}
    assert "address" not in {c["name"] for c in inspect(engine).get_columns("audit_log")}
    with engine.begin() as conn:
        for name, role in (("sync", "write"), ("dash", "read")):
            conn.execute(
                text("INSERT INTO api_keys (name, key_hash, role, created_at) VALUES (:n, :h, :r, CURRENT_TIMESTAMP)"),
                {"n": name, "h": "h-" + name, "r": role},
            )
        conn.execute(
            text("INSERT INTO audit_log (at, actor, action) VALUES (CURRENT_TIMESTAMP, 'cli', 'apikey.create')")
        )
    inventory.upgrade()
    with inventory.session(write=False) as s:
        assert dict(s.execute(select(ApiKey.name, ApiKey.scope)).all()) == {"sync": "operate", "dash": "read"}
        assert s.execute(select(AuditEntry.actor, AuditEntry.address)).all() == [("cli", None)]
    with engine.begin() as conn:
        conn.execute(insert(AuditEntry).values(actor="t", action="a", address="2001:db8::1"))
