"""Fuzzing: every operation of the API's own OpenAPI schema, with generated valid and invalid requests (schemathesis),
on an inventory with cameras, regions and health history, on SQLite and PostgreSQL.

Checks: no 5xx (not_a_server_error), every response conforms to the schema its operation declares
(response_schema_conformance), and no answer shows a camera's login (one camera's stream URI holds one).

Reads go with a read key. Writes listed in OPERATE_WRITES (edits, cancelling an operation) go with an operate key;
any other write with a read key (its validation and its 403): a write with effects outside the database (POST
/api/v1/operations starts a discovery or a sweep: generated parameters could probe any address range) must never
run from generated input. The operations are whatever the schema holds when the test runs: a new route is fuzzed
with no change here.

Bounded: MAX_EXAMPLES generated requests per operation and phase (no shrinking, no example database), so the whole
module takes well under a minute.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from api.app import create_app
from probes.health.results import CheckResult, StageResult
from tests.conftest import TEST_DATA, fresh_database
from vms.access.apikeys import create_key
from vms.errors import ValidationFailed
from vms.health.service import Health
from vms.inventory.service import Inventory
from vms.settings import Settings

MAX_EXAMPLES = 6
# Writes fuzzed with an operate key (their effects stay in the test's database); any other write gets a read key.
OPERATE_WRITES = {"PATCH /api/v1/cameras/{ref}", "POST /api/v1/operations/{op_id}/cancel"}
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance]
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
STAGES = (StageResult("tcp", True, 0.8), StageResult("onvif", True, 3.1))


def _health_history(inv: Inventory, rng: random.Random) -> None:
    """Six sweeps over every camera, a few going off and back: status, events and daily figures to read."""
    with inv.engine.connect() as conn:
        ids = [row[0] for row in conn.exec_driver_sql("SELECT id FROM cameras ORDER BY id")]
    health = Health(inv)
    bad: set[int] = set()
    for k in range(6):
        at = T0 + dt.timedelta(hours=4 * k)
        sweep = health.start_sweep(["tcp", "onvif"], "all", at=at)
        results = []
        for cid in ids:
            if rng.random() < 0.1:
                bad.symmetric_difference_update({cid})
            off = cid in bad
            stages = (STAGES[0], StageResult("onvif", False, 3000.0, "timeout")) if off else STAGES
            results.append(
                CheckResult(cid, at, stages, "off" if off else "ok", "onvif", "timeout" if off else None, None)
            )
        health.record(results, sweep)
        health.finish_sweep(sweep, at=at + dt.timedelta(minutes=1))


def _key(inv: Inventory, name: str, *scopes: str) -> str:
    """A key of the first scope the inventory knows ("operate", or "write" as it was called before scopes)."""
    for scope in scopes[:-1]:
        try:
            return create_key(inv, name, scope, actor="test")
        except ValidationFailed:
            continue
    return create_key(inv, name, scopes[-1], actor="test")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app over an inventory with the Hong Kong districts and cameras (one with URL credentials), health
    history, and a read and an operate key."""
    tmp = tmp_path_factory.mktemp("fuzz")
    for url in fresh_database(request, request.param, tmp / "vms.sqlite3"):
        settings = Settings(
            database_url=url,
            data_dir=tmp / "data",
            secret_key=Fernet.generate_key().decode(),
            allowed_hosts=["testserver"],  # the Host of schemathesis's ASGI client
            _env_file=None,
        )
        inv = Inventory(settings)
        inv.upgrade()
        try:
            inv.import_regions(TEST_DATA / "cameras" / "hk_18_districts.geojson")
            inv.import_file(TEST_DATA / "cameras" / "hk_traffic_cameras.csv")
            inv.edit_camera("H429F", {"stream_uri": "rtsp://admin:secret@127.0.1.8:554/ch1"}, actor="test")
            _health_history(inv, random.Random(10))
            keys = {"read": _key(inv, "fuzz-read", "read"), "operate": _key(inv, "fuzz-operate", "operate", "write")}
            app = create_app(inv)
            yield {"app": app, "keys": keys, "inventory": inv}
        finally:
            inv.engine.dispose()


@pytest.fixture(scope="module")
def api_schema(fuzz_app: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app["app"])


def key_for(operation: Any, keys: dict[str, str]) -> str:
    return keys["operate"] if operation.label in OPERATE_WRITES else keys["read"]


def strategies(operation: Any) -> list[tuple[str, Any]]:
    """Valid requests, invalid ones, and (an operation on one camera) valid ones naming a camera that exists."""
    out = [(mode.value, operation.as_strategy(generation_mode=mode)) for mode in GenerationMode]
    if "{ref}" in operation.path:
        out.append(("real camera", operation.as_strategy(path_parameters={"ref": "H429F"})))
    if operation.label == "PATCH /api/v1/cameras/{ref}":  # generated field names are not fields: one real edit
        body = {"fields": {"name": "Aberdeen Praya Road"}}
        out.append(("valid edit", operation.as_strategy(path_parameters={"ref": "H429F"}, body=body)))
    return out


def fuzz_operation(operation: Any, headers: dict[str, str], statuses: set[int]) -> list[str]:
    """Run one operation's bounded fuzz; the failures found (one line each, with the falsifying request)."""
    failures = []
    for label, strategy in strategies(operation):

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses.add(response.status_code)
            # H429F's stream URI holds a login: no answer (lists, exports, feed, statistics) may show it
            assert b"secret" not in response.content and b"credential_id" not in response.content, case.path

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
            continue
        except Exception as exc:  # a check failed: schemathesis's message names the request and the response
            failures.append(f"{operation.label} ({label}): {exc}"[:2000])
    return failures


def test_api_fuzz(api_schema: Any, fuzz_app: dict[str, Any]) -> None:
    """Every operation in the schema, valid and invalid requests: no 5xx, every response as its schema says."""
    failures: list[str] = []
    labels = []
    took: list[tuple[float, str]] = []
    statuses: dict[str, set[int]] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()  # an operation the schema cannot describe is itself a failure
        labels.append(operation.label)
        t0 = time.perf_counter()
        seen = statuses.setdefault(operation.label, set())
        failures.extend(fuzz_operation(operation, {"X-API-Key": key_for(operation, fuzz_app["keys"])}, seen))
        took.append((time.perf_counter() - t0, operation.label))
    for t, label in sorted(took, reverse=True):  # shown with -s: where the time goes, what was answered
        print(f"{t:6.2f}s {label}: {sorted(statuses[label])}")
    assert "GET /api/v1/cameras" in labels and "PATCH /api/v1/cameras/{ref}" in labels, labels
    assert 200 in statuses["GET /api/v1/cameras"] and 422 in statuses["GET /api/v1/cameras"]
    assert 200 in statuses["PATCH /api/v1/cameras/{ref}"]  # the operate key edits a real camera
    assert not failures, "\n\n".join(failures)


def test_nul_characters_are_refused(fuzz_app: dict[str, Any]) -> None:
    """PostgreSQL text cannot hold U+0000: a search or an edit with one was a 500 there (found by the fuzz); now a
    422 on both databases, and text with a backslash and "u0000" is still text."""
    read = {"X-API-Key": fuzz_app["keys"]["read"]}
    operate = {"X-API-Key": fuzz_app["keys"]["operate"]}
    with TestClient(fuzz_app["app"]) as client:
        for params in ({"search": "a\x00b"}, {"region": "\x00"}, {"source": "x\x00"}):
            r = client.get("/api/v1/cameras", params=params, headers=read)
            assert r.status_code == 422 and "NUL" in r.json()["detail"], (params, r.text)
        assert client.get("/api/v1/cameras/H210F%00", headers=read).status_code == 422
        r = client.patch("/api/v1/cameras/H210F", json={"fields": {"name": "a\x00b"}}, headers=operate)
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        r = client.patch("/api/v1/cameras/H210F", json={"fields": {"name": "a\\u0000b"}}, headers=operate)
        assert r.status_code == 200 and r.json()["record"]["name"] == "a\\u0000b", r.text
        assert client.get("/api/v1/cameras", params={"search": "\\u0000b"}, headers=read).json()["total"] == 1
