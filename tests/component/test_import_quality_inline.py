"""A first import (an empty inventory) checks the new cameras' quality problems as it writes them, instead of a
rebuild afterwards; what it stores equals a rebuild row for row and a from-scratch check, with chunks that split
duplicates, parents and merged records across them, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.component.test_stored_problems import HEADER, assert_same_as_from_scratch, ledger_rows, write
from vms.ingest import importers
from vms.inventory import problems
from vms.inventory.service import Inventory
from vms.store.models import camera_problems, camera_quality, quality_tallies
from vms.store.problems import ADVISORY_LOCK


def stored(inv: Inventory) -> tuple[list[Any], list[Any], list[Any]]:
    with inv.session(write=False) as s:
        return (
            [tuple(r) for r in s.execute(select(camera_quality).order_by(camera_quality.c.camera_id))],
            [tuple(r) for r in s.execute(select(camera_problems).order_by(*camera_problems.c))],
            sorted(tuple(r) for r in s.execute(select(quality_tallies))),
        )


def tricky_rows() -> list[str]:
    rows = ledger_rows(40)  # shared MACs and serials, parents (some named later in the file), bad civil codes
    rows += [
        # Damaged text, a vendor default name, a bare number, an IP as name, no position, a zero position.
        "37131100001326000901,鍗楁柟璺?,118.3000,35.0000,371311,球机,,,缃楀簞鍖,,3",
        "37131100001326000902,IPC,118.3010,35.0010,371311,球机,,,海康威视,,3",
        "37131100001326000903,12345,118.3020,35.0020,371311,枪机,,,大华,,1",
        "37131100001326000904,10.0.0.9,,,371311,球机,,,,,3",
        "37131100001326000905,罗庄区零点,0,0,99,球机,,,,,3",
        # A parent named by a later row.
        "37131100001326000906,罗庄区测试路906号,118.2820,34.9920,371311,球机,,,,37131100001326000907,3",
        "37131100001326000907,罗庄区测试路907号,118.2907,34.9907,371311,球机,,,,,3",
        # No device ID, the MAC of row 1: a later chunk adds to row 1's camera, which is merged again.
        ",罗庄区测试路1号(副),118.2810,34.9910,371311,球机,00:11:22:33:44:01,,,,3",
    ]
    return rows


@pytest.mark.parametrize("chunk", [7, 10_000])
def test_first_import_checks_quality_as_it_writes(inventory, tmp_path, test_data, monkeypatch, chunk):
    inv = inventory
    inv.import_regions(test_data / "geo/luozhuang_gcj02.json")
    inv.import_regions(test_data / "admin/areas.csv")
    monkeypatch.setattr(importers, "CHUNK_ROWS", chunk)
    ledger = write(tmp_path / "ledger.csv", tricky_rows())
    report = inv.import_file(ledger, source="ledger:police")
    assert "check_quality" in report.result.timings  # checked in the same pass, not rebuilt afterwards
    result = report.result
    assert result.observations_new == len(tricky_rows())
    assert result.cameras_created == result.observations_new - 1  # the last row joined row 1's camera
    problems_now = assert_same_as_from_scratch(inv, "first import")
    codes = {c for cs in problems_now.values() for c in cs}
    assert {"TEXT-DAMAGED", "DUP-SERIAL", "DUP-MAC", "PARENT-UNRESOLVED", "NAME-DEFAULT"} <= codes

    inline = stored(inv)
    with inv.session() as s:  # the reference: every camera checked again from the database
        problems.rebuild(s, governed=inv.settings.governed_region)
    assert stored(inv) == inline

    # The next import finds cameras: the usual refresh keeps them current.
    other = tmp_path / "other.csv"
    other.write_text(HEADER + "37131100001326008007,罗庄区测试路7号,118.2870,34.9970,371311,球机,,,,,3\n")
    report = inv.import_file(other, source="ledger:traffic")
    assert "check_quality" not in report.result.timings
    assert_same_as_from_scratch(inv, "second import")


def test_dry_run_of_a_first_import_stores_nothing(inventory, tmp_path):
    ledger = write(tmp_path / "ledger.csv", ledger_rows(5))
    inventory.import_file(ledger, source="ledger:police", dry_run=True)
    assert stored(inventory) == ([], [], [])
    inventory.import_file(ledger, source="ledger:police")
    assert_same_as_from_scratch(inventory, "import after a dry run")


def test_first_import_check_is_used_only_on_an_empty_inventory(inventory, tmp_path: Path):
    ledger = write(tmp_path / "ledger.csv", ledger_rows(5))
    with inventory.session() as s:
        assert problems.FirstImportCheck.start(s, governed=None, source="x") is not None
    inventory.import_file(ledger, source="ledger:police")
    with inventory.session() as s:
        assert problems.FirstImportCheck.start(s, governed=None, source="x") is None
        if s.connection().dialect.name == "postgresql":
            # An import into a non-empty inventory holds no problems lock until its end: other writers go on.
            with inventory.engine.connect() as other:
                taken = other.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({ADVISORY_LOCK})").scalar_one()
                assert taken is True
