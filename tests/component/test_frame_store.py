"""vms.frames.store: sample files addressed by content, sample rows (batch add, list, history, latest), sample sets,
reference frames, retention by count and age (shared files stay), the intact rate, and migration 0013_frames up and
down. SQLite and PostgreSQL (the inventory fixture)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat

import cv2
import numpy as np
import pytest
from sqlalchemy import inspect, select, update

from probes.health.results import CheckResult, StageResult
from vms.catalog.domain import Observation, SourceKind
from vms.errors import NotFound
from vms.frames.store import (
    DuplicateSampleSet,
    SampleRow,
    SampleSets,
    SampleStore,
    intact_rate,
    pack,
    unpack,
)
from vms.health.service import Health
from vms.inventory.ingest import observation_key
from vms.store import repository as repo
from vms.store.db import alembic_config
from vms.store.models import cameras

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
FRAME_TABLES = {"sample_sets", "frame_samples", "camera_references"}


def _cameras(inventory, regions: list[str | None]) -> list[int]:
    rows = [
        {"local_id": f"cam-{i}", "name": f"Camera {i}", "ip_address": f"10.9.0.{i + 1}"} for i in range(len(regions))
    ]
    obs = [Observation("ledger", SourceKind.LEDGER, observation_key(r), r) for r in rows]
    inventory.ingest_observations(obs, source="ledger", kind=SourceKind.LEDGER, snapshot=True, actor="test")
    with inventory.engine.begin() as conn:
        ids = list(conn.execute(select(cameras.c.id).order_by(cameras.c.id)).scalars())
        for cid, region in zip(ids, regions, strict=True):
            conn.execute(update(cameras).where(cameras.c.id == cid).values(region_code=region))
    return ids


def _jpeg(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _row(cid: int, sha: str, at: dt.datetime, *, faults: tuple[str, ...] = (), thumb=None, **kw) -> SampleRow:
    return SampleRow(
        camera_id=cid,
        taken_at=at,
        source=kw.pop("source", "rtsp"),
        width=64,
        height=48,
        codec="H264",
        latency_ms=12.5,
        bytes=1000,
        sha256=sha,
        thumb=thumb,
        faults=faults,
        metrics={"mean": 101.5},
        **kw,
    )


def _thumb(value: int, shape: tuple[int, int] = (36, 64)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def test_jpeg_files_are_addressed_by_content_written_once_and_private(inventory):
    store = SampleStore(inventory)
    jpeg = _jpeg(1)
    sha = store.write_jpeg(jpeg)
    assert sha == hashlib.sha256(jpeg).hexdigest()
    path = store.path_of(sha)
    assert path == inventory.settings.data_dir / "samples" / sha[:2] / f"{sha}.jpg"
    assert path.read_bytes() == jpeg
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((inventory.settings.data_dir / "samples").stat().st_mode) == 0o700
    os.utime(path, (1, 1))
    assert store.write_jpeg(bytes(jpeg)) == sha  # the same bytes: the same file, its time renewed
    assert path.stat().st_mtime > 1
    other = store.write_jpeg(_jpeg(2))
    assert other != sha
    files = sorted(p.name for p in (inventory.settings.data_dir / "samples").rglob("*") if p.is_file())
    assert files == sorted([f"{sha}.jpg", f"{other}.jpg"])  # no temporary file left behind
    assert store.read_image(sha).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="not a JPEG"):
        store.write_jpeg(b"GIF89a....")
    with pytest.raises(ValueError, match="not a sample address"):
        store.path_of("../" + sha[3:])


def test_batch_add_then_list_history_and_latest_newest_first(inventory):
    a, b = _cameras(inventory, ["371311", "371311"])
    store = SampleStore(inventory)
    sets = SampleSets(inventory)
    trial = sets.create("morning", {"frames": 1, "source": "rtsp"}, [a, b])
    sha = store.write_jpeg(_jpeg(3))
    # added out of time order, thumbnails as arrays and packed, of any 2-D shape
    rows = [
        _row(a, sha, T0 + dt.timedelta(minutes=2), thumb=_thumb(2), set_id=trial.id),
        _row(a, sha, T0, thumb=pack(_thumb(0))),
        _row(b, sha, T0 + dt.timedelta(minutes=1), thumb=_thumb(9, (90, 160)), faults=("too_dark", "blur")),
        _row(a, sha, T0 + dt.timedelta(minutes=1), thumb=_thumb(1), set_id=trial.id, source="snapshot"),
        _row(a, sha, T0 + dt.timedelta(minutes=3), thumb=None, sweep_id=7),
    ]
    ids = store.add(rows)
    assert len(ids) == 5 and len(set(ids)) == 5
    stored = {i: store.get(i) for i in ids}
    for i, row in zip(ids, rows, strict=True):  # ids in the order given
        got = stored[i]
        assert got is not None and got.camera_id == row.camera_id and got.taken_at == row.taken_at
        assert got.faults == row.faults and got.source == row.source and got.set_id == row.set_id
        assert got.metrics == {"mean": 101.5} and got.latency_ms == 12.5 and got.codec == "H264"
    assert stored[ids[4]].sweep_id == 7 and stored[ids[4]].thumbnail is None

    newest_a = [r.taken_at for r in store.list(camera_id=a)]
    assert newest_a == [T0 + dt.timedelta(minutes=m) for m in (3, 2, 1, 0)]
    assert [r.id for r in store.list(limit=2)] == [ids[4], ids[0]]
    assert [r.id for r in store.list(set_name="morning")] == [ids[0], ids[3]]
    with pytest.raises(NotFound):
        store.list(set_name="no such set")

    history = store.history([a, b, 9999], 2)
    assert set(history) == {a, b}
    # the newest two thumbnails, newest first (the newest sample has none)
    assert [int(t[0, 0]) for t in history[a]] == [2, 1]
    assert history[b][0].shape == (90, 160) and history[b][0].dtype == np.uint8
    assert [int(t[0, 0]) for t in store.history([a], 10)[a]] == [2, 1, 0]

    latest = store.latest([a, b])
    assert latest[a].id == ids[4] and latest[b].id == ids[2] and latest[b].faults == ("too_dark", "blur")
    assert store.add([]) == []
    with pytest.raises(NotFound, match="no camera"):
        store.add([_row(999_999, sha, T0)])
    with pytest.raises(ValueError, match="raw bytes"):  # a thumbnail keeps its shape
        store.add([_row(a, sha, T0, thumb=_thumb(1).tobytes())])
    assert len(store.list(limit=100)) == 5  # nothing of the refused batches landed
    assert sets.get("morning").samples == 2  # type: ignore[union-attr]


def test_sample_set_names_are_unique_and_creation_is_audited(inventory):
    a, b = _cameras(inventory, ["371311", None])
    sets = SampleSets(inventory)
    first = sets.create("dusk", {"frames": 3, "spacing_s": 2.0, "region": "371311"}, [a, b], notes="trial 1")
    assert first.camera_ids == (a, b) and first.settings["frames"] == 3 and first.created_by == "cli"
    with pytest.raises(DuplicateSampleSet, match="'dusk' exists") as err:
        sets.create(" dusk ", {}, [a])
    assert isinstance(err.value, ValueError)
    second = sets.create("dawn", {}, [b], actor="ops")
    assert [s.name for s in sets.list()] == ["dawn", "dusk"]  # newest first
    assert sets.get("dusk") == first and sets.get("nothing") is None
    assert second.created_by == "ops"
    with pytest.raises(ValueError, match="name"):
        sets.create("  ", {}, [a])
    with inventory.session(write=False) as s:
        entries = [(e.action, e.target) for e in repo.audit_entries(s, 10)]
    assert ("sampleset.create", "dusk") in entries and ("sampleset.create", "dawn") in entries
    assert [t for action, t in entries if action == "sampleset.create"].count("dusk") == 1


def test_reference_is_the_latest_fault_free_sample_by_default(inventory):
    (a,) = _cameras(inventory, ["371311"])
    store = SampleStore(inventory)
    sha = store.write_jpeg(_jpeg(4))
    ids = store.add(
        [
            _row(a, sha, T0, thumb=_thumb(0)),
            _row(a, sha, T0 + dt.timedelta(minutes=1), thumb=_thumb(1)),
            _row(a, sha, T0 + dt.timedelta(minutes=2), thumb=_thumb(2), faults=("occlusion",)),
        ]
    )
    ref = np.arange(90 * 160, dtype=np.uint32).reshape(90, 160).astype(np.uint8)
    assert store.set_reference(a, ref=ref, actor="cli") == ids[1]  # the faulty newest one is passed over
    got = store.references([a, 12345])
    assert list(got) == [a] and np.array_equal(got[a], ref)
    info = store.reference_info(a)
    assert info is not None and info["sample_id"] == ids[1] and (info["width"], info["height"]) == (64, 48)
    assert store.set_reference(a, ids[0], ref=ref[:45]) == ids[0]  # replaces it; by a sweep: not audited
    assert store.references([a])[a].shape == (45, 160)
    with pytest.raises(NotFound):
        store.set_reference(a, 999_999, ref=ref)
    with inventory.session(write=False) as s:
        assert [e.action for e in repo.audit_entries(s, 10)].count("sample.reference") == 1


def test_prune_by_count_and_age_removes_rows_then_unshared_files(inventory):
    a, b = _cameras(inventory, ["371311", "371311"])
    store = SampleStore(inventory)
    shas = [store.write_jpeg(_jpeg(10 + i)) for i in range(5)]
    shared = shas[0]
    # a: 5 samples (oldest first), each its own file; b: 2 samples, the older sharing a's oldest file
    store.add([_row(a, shas[i], T0 + dt.timedelta(hours=i)) for i in range(5)])
    b_ids = store.add([_row(b, shared, T0 + dt.timedelta(hours=1)), _row(b, store.write_jpeg(_jpeg(99)), T0)])
    now = T0 + dt.timedelta(days=1)

    report = store.prune(keep_per_camera=3, max_age_days=30, now=now, file_grace_s=0)
    # a loses its two oldest; the oldest file stays (b's sample uses it), the second goes
    assert (report.rows, report.files, report.shared, report.cameras) == (2, 1, 1, 1)
    assert report.bytes_freed == len(_jpeg(11))
    assert store.path_of(shared).exists() and not store.path_of(shas[1]).exists()
    assert [r.sha256 for r in store.list(camera_id=a)] == shas[4:1:-1]
    assert len(store.list(camera_id=b)) == 2

    # by age: everything taken before T0 + 2.5 h goes, except b's reference sample
    store.set_reference(b, b_ids[0], ref=_thumb(5))
    report = store.prune(keep_per_camera=100, max_age_days=21.5 / 24, now=now, file_grace_s=0)
    # kept: a's newest two (T0+3h, T0+4h) and b's reference (T0+1h, shared file)
    assert report.rows == 2 and report.files == 2 and report.cameras == 2
    assert [r.sha256 for r in store.list(camera_id=a)] == [shas[4], shas[3]]
    assert [r.id for r in store.list(camera_id=b)] == [b_ids[0]]
    assert store.path_of(shared).exists()
    assert store.path_of(shas[3]).exists() and not store.path_of(shas[2]).exists()

    # a file reused within the grace period (a sweep about to add its row) stays though no row refers to it
    assert store.write_jpeg(_jpeg(13)) == shas[3]
    report = store.prune(keep_per_camera=1, max_age_days=30, now=now)
    assert (report.rows, report.files, report.recent) == (1, 0, 1) and store.path_of(shas[3]).exists()
    # settings give the defaults (20 per camera, 30 days): nothing more to remove
    assert store.prune(now=now).rows == 0
    # orphans, found by walking the folder: the file the grace period kept above (its row is gone), a file whose
    # row never landed, and a write that never finished
    orphan = store.write_jpeg(_jpeg(50))
    stray = store.path_of(orphan).parent / ".abc.tmp"
    stray.write_bytes(b"half")
    assert store.prune(now=now, file_grace_s=0).orphans == 0  # not asked for
    report = store.prune(now=now, file_grace_s=0, orphans=True)
    assert (report.rows, report.orphans, report.bytes_freed) == (0, 2, len(_jpeg(13)) + len(_jpeg(50)))
    assert not store.path_of(orphan).exists() and not store.path_of(shas[3]).exists() and not stray.exists()
    kept = {p.stem for p in store.root.rglob("*.jpg")}
    assert kept == {r.sha256 for r in store.list(limit=100)}  # every remaining file is some row's
    with inventory.session(write=False) as s:
        assert [e.action for e in repo.audit_entries(s, 20)].count("samples.prune") == 3


def _health(cid: int, outcome: str) -> CheckResult:
    ok = outcome == "ok"
    stage, cause = ("login", None) if ok else ("tcp", "timeout")
    return CheckResult(cid, T0, (StageResult("tcp", ok, 1.0, cause),), outcome, stage, cause, None)


def test_intact_rate_against_a_hand_count(inventory):
    regions = ["371311", "371311", "371311", "371312", "371312", "3713", None, "371402", "371311"]
    ids = _cameras(inventory, regions)
    c = dict(enumerate(ids))
    health = Health(inventory)
    sweep = health.start_sweep(["tcp"])
    outcomes = {0: "ok", 1: "ok", 2: "ok", 3: "ok", 4: "off", 5: "ok", 6: "ok", 7: "ok", 8: "ok"}
    health.record([_health(c[i], o) for i, o in outcomes.items()], sweep)  # the first result sets the status
    with inventory.engine.begin() as conn:  # camera 8 was removed from the inventory: not registered
        conn.execute(update(cameras).where(cameras.c.id == c[8]).values(removed_at=T0))
    store = SampleStore(inventory)
    sha = store.write_jpeg(_jpeg(20))
    later = T0 + dt.timedelta(minutes=5)
    store.add(
        [
            _row(c[0], sha, T0, faults=("blur",)),
            _row(c[0], sha, later),  # 0: ON, latest fault-free -> intact
            _row(c[1], sha, T0),
            _row(c[1], sha, later, faults=("too_dark", "low_contrast")),  # 1: ON, latest faulty
            # 2: ON, never sampled -> not intact
            _row(c[3], sha, later),  # 3: ON, fault-free -> intact
            _row(c[4], sha, later),  # 4: OFF -> not intact
            _row(c[5], sha, later),  # 5: ON, fault-free, region 3713 itself -> intact
            _row(c[6], sha, later, faults=("freeze",)),  # 6: ON, no region, faulty
            _row(c[7], sha, later),  # 7: ON, another city, intact
            _row(c[8], sha, later),  # 8: removed
        ]
    )
    rate = intact_rate(inventory)
    assert (rate.registered, rate.online, rate.sampled, rate.intact) == (8, 7, 7, 4)
    assert rate.rate == 4 / 8
    assert rate.faults == {"freeze": 1, "low_contrast": 1, "too_dark": 1}
    r = rate.by_region
    assert (r["371311"].registered, r["371311"].online, r["371311"].sampled, r["371311"].intact) == (3, 3, 2, 1)
    assert (r["371312"].registered, r["371312"].online, r["371312"].intact) == (2, 1, 1)
    assert (r["3713"].registered, r["3713"].intact) == (6, 3)  # the city with its districts
    assert (r["371402"].registered, r["371402"].intact) == (1, 1)

    city = intact_rate(inventory, region="3713")
    assert (city.registered, city.online, city.sampled, city.intact) == (6, 5, 5, 3)
    assert set(city.by_region) == {"3713", "371311", "371312"}
    assert intact_rate(inventory, region="99").registered == 0 and intact_rate(inventory, region="99").rate is None
    assert city.to_dict()["by_region"]["371311"]["rate"] == 1 / 3


def test_migration_0013_applies_and_downgrades(inventory):
    from alembic import command

    def tables() -> set[str]:
        return set(inspect(inventory.engine).get_table_names())

    assert tables() >= FRAME_TABLES
    cfg = alembic_config(inventory.engine.url.render_as_string(hide_password=False))
    with inventory.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012_source_file_shortcut")
    inventory.engine.dispose()
    assert not FRAME_TABLES & tables()
    inventory.upgrade()
    assert tables() >= FRAME_TABLES
    (a,) = _cameras(inventory, ["371311"])  # and the tables work again
    store = SampleStore(inventory)
    assert store.add([_row(a, store.write_jpeg(_jpeg(30)), T0)])


def test_packed_arrays_keep_shape_and_type():
    arrays = (
        np.zeros((36, 64), np.uint8),
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.ones((2, 3), np.float32),
        np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)),
        np.arange(20, dtype=np.uint8).reshape(4, 5)[:, ::2],
        np.array(7, np.int16),
    )
    for array in arrays:
        for _ in range(2):  # parsed, then from the header cache
            back = unpack(pack(array))
            assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
            back[...] = 0  # a copy of its own
    with pytest.raises(ValueError):
        pack(np.array([object()]))
    with pytest.raises(ValueError):
        unpack(b"raw pixels")


def test_reference_made_from_the_sample_jpeg_when_none_is_given(inventory):
    vqd = pytest.importorskip("vms.frames.vqd")
    (a,) = _cameras(inventory, ["371311"])
    store = SampleStore(inventory)
    jpeg = _jpeg(40, (360, 640))
    (sid,) = store.add([_row(a, store.write_jpeg(jpeg), T0)])
    assert store.set_reference(a) == sid
    expected = vqd.reference_of(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    assert np.array_equal(store.references([a])[a], expected)
