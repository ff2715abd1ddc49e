"""`vms samples list|show|sets|prune`, `vms vqd CAMERA` and `vms intact` as an operator runs them (python -m vms in
a subprocess, on SQLite and PostgreSQL), on samples stored through SampleStore from real frames: the pedestrian
clip decoded by PyAV, JPEG-encoded by OpenCV, diagnosed by vms.frames.vqd (one copy darkened: too_dark). Bad input
is one line and exit 2 (checked once, on SQLite)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import update

from probes.health.results import CheckResult, StageResult
from tests.e2e.cli import Vms, vms_env, vms_runner
from vms.catalog.domain import Observation, SourceKind
from vms.frames import vqd
from vms.frames.store import SampleRow, SampleSets, SampleStore
from vms.health.service import Health
from vms.inventory.ingest import observation_key
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo
from vms.store.models import cameras

CLIP = Path(__file__).resolve().parents[1] / "data" / "video" / "pedestrians_480x360_8s.mp4"
SECRET = "s3cr3t-pw"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Four pictures of the pedestrian scene a second apart (BGR, 480x360)."""
    out: list[np.ndarray] = []
    with av.open(str(CLIP)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 10 == 0:
                out.append(frame.to_ndarray(format="bgr24"))
            if len(out) == 4:
                break
    assert len(out) == 4
    return out


def _cameras(inv: Inventory) -> list[int]:
    """Three ledger cameras (department numbers cam-0..2, regions 371311, 371311, 371312), a login in the first's
    stream URI; the first two ON after a health check, the third never checked."""
    rows = [{"local_id": f"cam-{i}", "name": f"Gate {i}", "ip_address": f"10.9.0.{i + 1}"} for i in range(3)]
    obs = [Observation("ledger", SourceKind.LEDGER, observation_key(r), r) for r in rows]
    inv.ingest_observations(obs, source="ledger", kind=SourceKind.LEDGER, snapshot=True, actor="test")
    with inv.session() as s:
        ids = [repo.camera_ids_by(s, "local_id", f"cam-{i}")[0] for i in range(3)]
    with inv.engine.begin() as conn:
        for cid, region in zip(ids, ["371311", "371311", "371312"], strict=True):
            conn.execute(update(cameras).where(cameras.c.id == cid).values(region_code=region))
        conn.execute(
            update(cameras).where(cameras.c.id == ids[0]).values(stream_uri=f"rtsp://admin:{SECRET}@10.9.0.1/stream1")
        )
    health = Health(inv)
    sweep = health.start_sweep(["tcp"])
    health.record(
        [CheckResult(cid, NOW, (StageResult("tcp", True, 1.0, None),), "ok", "tcp", None, None) for cid in ids[:2]],
        sweep,
    )
    return ids


def _store_samples(inv: Inventory, ids: list[int], frames: list[np.ndarray]) -> list[int]:
    """Camera 0: three good pictures; camera 1 (set north): a good one, then a darkened one (its latest). Files made
    an hour old, so that prune may remove them."""
    store = SampleStore(inv)
    north = SampleSets(inv).create("north", {"frames": 1, "source": "rtsp"}, ids[:2], actor="test")
    plan = [
        (ids[0], frames[0], None),
        (ids[0], frames[1], None),
        (ids[0], frames[2], None),
        (ids[1], frames[3], north.id),
        (ids[1], cv2.convertScaleAbs(frames[3], alpha=0.1), north.id),
    ]
    rows: list[SampleRow] = []
    history: dict[int, list[np.ndarray]] = {}
    for n, (cid, image, set_id) in enumerate(plan):
        diagnosis = vqd.diagnose(image, history=history.get(cid, []))
        ok, buf = cv2.imencode(".jpg", image)
        assert ok
        jpeg = buf.tobytes()
        sha = store.write_jpeg(jpeg)
        thumb = vqd.thumbnail(image)
        history.setdefault(cid, []).insert(0, thumb)
        rows.append(
            SampleRow(
                camera_id=cid,
                taken_at=NOW - dt.timedelta(minutes=10 - n),
                source="rtsp",
                width=image.shape[1],
                height=image.shape[0],
                codec="H264",
                latency_ms=40.0 + n,
                bytes=len(jpeg),
                sha256=sha,
                thumb=thumb,
                faults=diagnosis.faults,
                metrics=diagnosis.metrics,
                set_id=set_id,
            )
        )
    assert [r.faults for r in rows] == [(), (), (), (), ("too_dark",)]
    orphan = store.write_jpeg(cv2.imencode(".jpg", frames[0][:40, :40])[1].tobytes())  # a row that never landed
    old = time.time() - 3600
    for path in [store.path_of(r.sha256) for r in rows] + [store.path_of(orphan)]:
        os.utime(path, (old, old))
    return store.add(rows)


def _run_all(vms: Vms, commands: list[tuple[str, ...]], *, code: int = 0) -> list[subprocess.CompletedProcess[str]]:
    """Independent read-only commands two at a time (each is a fresh interpreter: most of its time is imports)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: vms(*args, code=code), commands))


def _clean(done: list[subprocess.CompletedProcess[str]]) -> None:
    """No stream URI, no login in anything printed."""
    assert not any(SECRET in p.stdout + p.stderr or "rtsp://" in p.stdout + p.stderr for p in done)


def test_samples_vqd_intact_and_prune_as_json(inventory, settings, tmp_path, frames):
    ids = _cameras(inventory)
    sample_ids = _store_samples(inventory, ids, frames)
    vms = vms_runner(vms_env(settings, tmp_path), no_traceback=True)
    done = _run_all(
        vms,
        [
            ("samples", "list", "--json"),
            ("samples", "show", str(sample_ids[4]), "--json"),
            ("vqd", "cam-1", "--json"),
            ("intact", "--json"),
        ],
    )
    listed, shown, found, rate = (json.loads(p.stdout) for p in done)

    assert [d["id"] for d in listed] == sample_ids[::-1]  # newest first
    newest = listed[0]
    assert (newest["camera_id"], newest["faults"], newest["set"], newest["codec"], newest["source"]) == (
        ids[1],
        ["too_dark"],
        "north",
        "H264",
        "rtsp",
    )
    assert (newest["width"], newest["height"], newest["latency_ms"]) == (480, 360, 44.0)

    assert shown["file_present"] and Path(shown["path"]).read_bytes()[:2] == b"\xff\xd8"
    assert Path(shown["path"]).is_relative_to(tmp_path / "data" / "samples")
    assert shown["metrics"]["mean"] < 40 and shown["faults"] == ["too_dark"] and shown["device_id"] is None

    assert found["latest"]["id"] == sample_ids[4] and found["reference"] is None
    reason = found["latest"]["reasons"]["too_dark"]
    assert reason.startswith("mean grey ") and reason.endswith(" < 40"), reason
    assert [h["faults"] for h in found["history"]] == [["too_dark"], []] and found["fault_counts"] == {"too_dark": 1}

    assert (rate["registered"], rate["online"], rate["sampled"], rate["intact"]) == (3, 2, 2, 1)
    assert rate["faults"] == {"too_dark": 1} and rate["by_region"]["371311"]["rate"] == 0.5

    done.append(vms("vqd", "cam-0", "--set-reference", str(sample_ids[0])))
    text = done[-1].stdout
    assert f"reference set to sample {sample_ids[0]}" in text and "passes every check" in text, text
    assert f"reference: sample {sample_ids[0]}, 480x360" in text and "last 3 samples: 0 with faults" in text, text
    with inventory.session(write=False) as s:
        audit = [e for e in repo.audit_entries(s, 20) if e.action == "sample.reference"]
    assert [(e.actor, e.target) for e in audit] == [("cli", str(ids[0]))]

    # keep 1 per camera: camera 0 keeps its newest and its reference (the oldest), camera 1 its newest
    done.append(vms("samples", "prune", "--keep", "1", "--orphans", "--json"))
    pruned = json.loads(done[-1].stdout)
    assert (pruned["rows"], pruned["files"], pruned["orphans"], pruned["cameras"]) == (2, 2, 1, 2), pruned
    assert pruned["keep_per_camera"] == 1 and pruned["max_age_days"] == settings.samples_max_age_days
    assert [r.id for r in SampleStore(inventory).list()] == [sample_ids[4], sample_ids[2], sample_ids[0]]
    _clean(done)


def test_text_output_and_bad_input(tmp_path, frames):
    """On SQLite only: the output's shape and the handling of arguments do not depend on the database."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'vms.sqlite3'}",
        data_dir=tmp_path / "data",
        secret_key=Fernet.generate_key().decode(),
        _env_file=None,
    )
    inventory = Inventory(settings)
    inventory.upgrade()
    try:
        ids = _cameras(inventory)
        sample_ids = _store_samples(inventory, ids, frames)
    finally:
        inventory.engine.dispose()
    vms = vms_runner(vms_env(settings, tmp_path), no_traceback=True)
    done = _run_all(
        vms,
        [
            ("samples", "list", "--camera", "cam-0", "--limit", "2"),
            ("samples", "list", "--set", "north", "--json"),
            ("samples", "show", str(sample_ids[0])),
            ("samples", "sets"),
            ("vqd", "cam-1"),
            ("vqd", "cam-2"),
            ("intact", "--region", "371312"),
        ],
    )
    listed, in_set, shown, sets, faulty, unsampled, region = (p.stdout for p in done)
    assert "2 samples, newest first" in listed and "the newest 2; --limit for more" in listed, listed
    assert f"{ids[0]} cam-0" in listed and "cam-1" not in listed, listed
    assert "480x360" in listed and "40 ms" not in listed and "41 ms" in listed and "42 ms" in listed, listed
    assert [d["id"] for d in json.loads(in_set)] == [sample_ids[4], sample_ids[3]]
    assert shown.startswith(f"sample {sample_ids[0]}: camera {ids[0]} cam-0 Gate 0, taken "), shown
    assert "faults: none" in shown and "blur_var" in shown and f"{tmp_path / 'data' / 'samples'}" in shown, shown
    assert "1 sample sets" in sets and "north" in sets and "frames 1, source rtsp" in sets, sets
    assert "too_dark: mean grey" in faulty and "last 2 samples: 1 with faults: too_dark 1" in faulty, faulty
    assert "reference: none" in faulty, faulty
    assert unsampled.strip() == f"camera {ids[2]} cam-2 Gate 2: no sample yet (`vms sample` takes one)", unsampled
    assert "intact rate in region 371312: 0.0% (0 of 1 registered cameras intact; 0 online, 0 sampled)" in region
    _clean(done)

    cases = [
        (("vqd", "nosuch"), "no camera 'nosuch'"),
        (("samples", "show", "99999"), "no sample with id 99999"),
        (("samples", "list", "--set", "south"), "no sample set named 'south'"),
        (("samples", "list", "--limit", "0"), "Invalid value for '--limit'"),
        (("vqd", "cam-0", str(sample_ids[0])), "a SAMPLE_ID goes with --set-reference"),
        (("vqd", "cam-0", "--set-reference", str(sample_ids[4])), f"has no sample {sample_ids[4]}"),
    ]
    for (args, message), failed in zip(cases, _run_all(vms, [c[0] for c in cases], code=2), strict=True):
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, failed.stderr)
        assert failed.stdout == "", (args, failed.stdout)
    inventory = Inventory(settings)
    try:
        with inventory.session(write=False) as s:
            assert not [e for e in repo.audit_entries(s, 20) if e.action == "sample.reference"]
    finally:
        inventory.engine.dispose()
