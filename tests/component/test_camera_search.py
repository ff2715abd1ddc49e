"""Camera lists and text search through an index (SQLite FTS5 trigram, PostgreSQL pg_trgm) give exactly what a
scan of every camera gives: after imports, edits, removals and re-listing; literal text; 1-2 characters; removed
cameras included on request; and the unfiltered total read from the counters equals a count."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from vms.store import repository as repo
from vms.store.models import cameras

ROWS = [
    ("37131100001320000001", "沂河路口东", "LZ-001", "罗庄区沂河路1号", "10.0.0.1"),
    ("37131100001320000002", "沂河路口西", "LZ-002", "罗庄区沂河路2号", "10.0.0.2"),
    ("37131100001320000003", "cam_east 50%", "dept-99", "Tongda Road", "10.0.0.3"),
    ("37131100001320000004", "CAM-West", "LZ-004", 'say "hi"', "192.168.1.14"),
    ("37131100001320000005", "罗", "X", "", "10.0.0.5"),
]


def write(path: Path, rows: list[tuple[str, ...]]) -> Path:
    lines = ["设备编码,设备名称,编号,安装地址,IP地址"]
    lines += [",".join(f'"{v.replace(chr(34), chr(34) * 2)}"' for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def scan(inventory, text: str, *, include_removed: bool = False) -> list[int]:
    """The reference: every camera, the text looked for in Python."""
    cols = [cameras.c.id, cameras.c.removed_at, *(cameras.c[c] for c in repo.SEARCH_COLUMNS)]
    with inventory.session(write=False) as s:
        rows = s.execute(select(*cols).order_by(cameras.c.id)).all()
    return [
        r[0]
        for r in rows
        if (include_removed or r[1] is None) and any(text.lower() in (v or "").lower() for v in r[2:])
    ]


def found(inventory, text: str, **kw) -> list[int]:
    total, rows = inventory.list_cameras(repo.CameraFilter(search=text, **kw), limit=1000)
    assert total == len(rows)
    return [r["id"] for r in rows]


QUERIES = [
    "沂河路",
    "沂河",
    "罗",
    "路口西",
    "lz-00",
    "LZ-004",
    "cam",
    "CAM_",
    "_",
    "%",
    "50%",
    "\\",
    '"hi"',
    '"',
    "10.0.0",
    "192.168.1.1",
    "0.0.",
    "1号",
    "tongda",
    "nothing-like-this",
    "37131100001320000003",
    "50%\x1fdept",  # across two columns joined by the PostgreSQL index's separator: no match
    "\x1f",
]


def check_all(inventory) -> None:
    for q in QUERIES:
        for include_removed in (False, True):
            assert found(inventory, q, include_removed=include_removed) == scan(
                inventory, q, include_removed=include_removed
            ), (q, include_removed)


def test_search_equals_a_scan_through_every_change(inventory, tmp_path):
    ledger = write(tmp_path / "a.csv", ROWS)
    inventory.import_file(ledger, source="ledger:a")
    check_all(inventory)
    assert found(inventory, "路口") == [1, 2]
    assert found(inventory, "_") == [3]  # literal: not "any character"
    assert found(inventory, "%") == [3]

    # an edit re-indexes the camera: the old name no longer matches, the new one does
    inventory.edit_camera("37131100001320000001", {"name": "银雀山路口"}, actor="test")
    assert found(inventory, "银雀山") == [1]
    assert 1 not in found(inventory, "沂河路口")
    check_all(inventory)

    # the source stops listing two cameras: removed, out of the results unless asked for
    inventory.import_file(write(tmp_path / "a.csv", ROWS[:3]), source="ledger:a", allow_removals=True)
    assert found(inventory, "LZ-004") == []
    assert found(inventory, "LZ-004", include_removed=True) == [4]
    check_all(inventory)

    # listed again: back in the index
    inventory.import_file(write(tmp_path / "a.csv", ROWS), source="ledger:a")
    assert found(inventory, "LZ-004") == [4]
    check_all(inventory)

    # combined with other filters
    total, rows = inventory.list_cameras(repo.CameraFilter(search="路口西", source="ledger:a"), limit=10)
    assert total == 1 and [r["id"] for r in rows] == [2]


def test_pages_of_a_search_and_keys_are_plain_text(inventory, tmp_path):
    rows = [(f"371311000013200{i:05d}", f"路口{i}", f"N-{i}", "", "") for i in range(1, 31)]
    inventory.import_file(write(tmp_path / "b.csv", rows), source="ledger:b")
    total, first = inventory.list_cameras(repo.CameraFilter(search="路口"), limit=10, offset=0)
    _, second = inventory.list_cameras(repo.CameraFilter(search="路口"), limit=10, offset=10)
    assert total == 30
    assert [r["id"] for r in first + second] == list(range(1, 21))
    assert all(type(k) is str for k in first[0])  # not SQLAlchemy's quoted_name: JSON encoders take the fast path


def test_unfiltered_total_equals_a_count(inventory, tmp_path):
    def counted() -> int:
        with inventory.session(write=False) as s:
            return int(s.scalar(select(func.count()).select_from(cameras).where(cameras.c.removed_at.is_(None))))

    assert inventory.list_cameras(repo.CameraFilter(), limit=1)[0] == 0
    inventory.import_file(write(tmp_path / "c.csv", ROWS), source="ledger:c")
    assert inventory.list_cameras(repo.CameraFilter(), limit=1)[0] == counted() == 5
    inventory.import_file(write(tmp_path / "c.csv", ROWS[:4]), source="ledger:c", allow_removals=True)
    assert inventory.list_cameras(repo.CameraFilter(), limit=1)[0] == counted() == 4
    assert inventory.list_cameras(repo.CameraFilter(include_removed=True), limit=1)[0] == 5


def test_a_large_import_is_searchable_at_once(inventory, tmp_path):
    # over LARGE_WRITE cameras: PostgreSQL's statistics and the trigram index's pending entries are refreshed
    rows = [
        (f"371311000013200{i:05d}", f"罗庄路口{i}", f"N-{i}", f"沂河路{i}号", f"10.9.{i // 256}.{i % 256}")
        for i in range(1, 1201)
    ]
    inventory.import_file(write(tmp_path / "big.csv", rows), source="ledger:big")
    assert found(inventory, "路口1199") == [1199]
    assert found(inventory, "10.9.4.1") == scan(inventory, "10.9.4.1")
    assert inventory.list_cameras(repo.CameraFilter(search="罗庄路口"), limit=5)[0] == 1200
