"""The real `vms apikey` and `vms audit` commands with a real API server: a key made by the CLI (printed once, with a
scope) edits a camera over HTTP, the audit shows who and from where, a revoked key is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from api.app import create_app
from tests.component.test_import_files import write_ledger
from tests.e2e.cli import vms_env, vms_runner
from tests.services import serve_in_thread
from vms.inventory.service import Inventory

CAMERA = "37131100001326000001"


@pytest.fixture
def server(settings, tmp_path) -> Iterator[str]:
    """The API of ``settings``' database in a real uvicorn server on 127.0.0.1 (reads closed)."""
    inv = Inventory(settings.model_copy(update={"api_open_reads": False}))
    inv.upgrade()
    ledger = tmp_path / "ledger.csv"
    write_ledger(ledger)
    inv.import_file(ledger, column_map={})
    try:
        with serve_in_thread(create_app(inv), lifespan="off") as url:
            yield url
    finally:
        inv.engine.dispose()


# The CLI is the same on either database (tests/component/test_access_scopes.py runs the rules on both): one run.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_keys_with_scopes_edit_over_http_and_the_audit_says_from_where(server, settings, tmp_path):
    vms = vms_runner(vms_env(settings, tmp_path, COLUMNS="200"), no_traceback=True)
    key = vms("apikey", "create", "ledger-sync", "--scope", "operate").stdout.strip()
    assert key.startswith("vms_") and len(key.splitlines()) == 1  # the key alone, once
    bad = vms("apikey", "create", "x", "--scope", "root", code=2)
    assert len(bad.stderr.strip().splitlines()) == 1 and "read, operate, admin" in bad.stderr

    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/api/v1/cameras").status_code == 401  # reads are closed
        r = http.patch(f"/api/v1/cameras/{CAMERA}", json={"fields": {"name": "沂河路口"}}, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        assert http.get("/api/v1/audit", headers={"X-API-Key": key}).status_code == 403  # admins only

        listed = {k["name"]: k for k in json.loads(vms("apikey", "list", "--json").stdout)}
        assert listed["ledger-sync"]["scope"] == "operate" and listed["ledger-sync"]["last_used_at"]
        assert key not in json.dumps(listed)
        vms("apikey", "revoke", "ledger-sync")
        assert http.get("/api/v1/cameras", headers={"X-API-Key": key}).status_code == 401  # refused at once

    table = vms("audit").stdout
    rows = {line.split("│")[3].strip(): line for line in table.splitlines() if line.count("│") >= 6}
    assert "apikey:ledger-sync" in rows["camera.edit"] and "127.0.0.1" in rows["camera.edit"]
    assert "cli@" in rows["apikey.create"] and "cli@" in rows["apikey.revoke"]
    assert key not in table
    vms("cameras", "edit", CAMERA, "owner=Luozhuang police")  # a change made on the command line says so too
    edits = [e for e in json.loads(vms("audit", "--json").stdout) if e["action"] == "camera.edit"]
    assert {(e["address"] or "")[:4] for e in edits} == {"127.", "cli@"}, edits
