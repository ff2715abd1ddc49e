"""Structured-processing trials over a stored sample set: the real pedestrian clip's frames (decoded with PyAV,
stored through the sample store) yield Person records on most frames; the report says per camera and overall what
was found, how fast each analyzer ran and whether the camera suits structured processing, as JSON and HTML."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from cryptography.fernet import Fernet

from tests.e2e.cli import run_vms, vms_env
from vms.catalog.domain import Observation, SourceKind
from vms.errors import NotFound
from vms.frames.store import SampleRow, SampleSets, SampleStore
from vms.frames.trials import (
    DuplicateTrial,
    TrialInputError,
    get_trial,
    list_trials,
    report_html,
    report_json,
    run_trial,
    trial_objects_of,
)
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

FRAMES = 10


@pytest.fixture(scope="module")
def clip_frames(test_data: Path) -> list[np.ndarray]:
    """~10 frames spread over the 8 s pedestrian clip (480x360, people walking on a campus path)."""
    with av.open(str(test_data / "video" / "pedestrians_480x360_8s.mp4")) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    step = len(frames) // FRAMES
    return frames[::step][:FRAMES]


def _cameras(inv: Inventory, n: int) -> list[int]:
    obs = [
        Observation("ledger:test", SourceKind.LEDGER, f"local:T-{i}",
                    {"name": f"Trial camera {i}", "local_id": f"T-{i}", "ip_address": f"127.0.9.{i + 1}"})
        for i in range(n)
    ]  # fmt: skip
    inv.ingest_observations(obs, source="ledger:test", kind=SourceKind.LEDGER, snapshot=False, actor="test")
    with inv.session(write=False) as s:
        return [repo.camera_ids_by(s, "ip_address", f"127.0.9.{i + 1}")[0] for i in range(n)]


def _store_set(inv: Inventory, name: str, by_camera: dict[int, list[np.ndarray]]) -> int:
    sset = SampleSets(inv).create(name, {"source": "test"}, list(by_camera), actor="test")
    store = SampleStore(inv)
    t0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
    rows = []
    for cid, frames in by_camera.items():
        for i, frame in enumerate(frames):
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            jpeg = bytes(buf)
            rows.append(
                SampleRow(camera_id=cid, taken_at=t0 + dt.timedelta(seconds=0.8 * i), source="rtsp",
                          width=frame.shape[1], height=frame.shape[0], codec="H264", latency_ms=50.0,
                          bytes=len(jpeg), sha256=store.write_jpeg(jpeg), thumb=None, set_id=sset.id)
            )  # fmt: skip
    store.add(rows)
    return sset.id


def _dark(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 30, (360, 640, 3), dtype=np.uint8) for _ in range(n)]


def test_pedestrian_clip_yields_people_and_a_report(inventory, clip_frames, tmp_path):
    peds, dark = _cameras(inventory, 2)
    _store_set(inventory, "campus", {peds: clip_frames, dark: _dark(2)})

    progress: list[tuple[str, int, int]] = []
    report = run_trial(inventory, "campus", ["hog_people", "motion"], name="t1",
                       progress=lambda *a: progress.append(a))  # fmt: skip
    assert report.status == "done" and report.name == "t1" and report.set_name == "campus"
    assert progress[-1] == ("analyze", FRAMES + 2, FRAMES + 2)

    # Done-when: Person records on most sampled frames of the pedestrian clip.
    objects = trial_objects_of(inventory, report.id)
    people = [o for o in objects if o["kind"] == "Person" and o["camera_id"] == peds]
    frames_with_person = {o["sample_id"] for o in people}
    assert len(frames_with_person) >= 0.7 * FRAMES, f"Person on {len(frames_with_person)} of {FRAMES} frames"
    for o in people:  # GA/T 1400 box inside the 480x360 frame, analyzer named and versioned
        assert 0 <= o["LeftTopX"] < o["RightBtmX"] < 480 and 0 <= o["LeftTopY"] < o["RightBtmY"] < 360
        assert o["analyzer"] == "hog_people" and o["analyzer_version"].startswith("opencv-") and o["score"] > 0
    assert not [o for o in objects if o["camera_id"] == dark and o["kind"] == "Person"]
    assert any(o["kind"] == "Motion" for o in objects)  # people walking: motion between the frames

    s = report.summary
    assert s["frames"] == FRAMES + 2 and s["cameras"] == 2 and s["missing"] == 0
    assert s["detections"]["Person"] == len(people)
    assert s["frames_with"]["Person"] == len(frames_with_person)
    for name in ("hog_people", "motion"):
        a = s["analyzers"][name]
        assert a["frames"] == FRAMES + 2 and a["fps"] > 0 and a["cpu_fps"] > 0 and a["version"]
    cams = {c["camera_id"]: c for c in s["per_camera"]}
    # 480x360: people and vehicles only -> marginal, with the resolution as the reason
    assert cams[peds]["verdict"] == "marginal" and cams[peds]["resolution"] == "480x360"
    assert any("480x360" in r and "faces and plates" in r for r in cams[peds]["reasons"])
    assert cams[peds]["frames_with_objects"] >= 7
    # a dark, detail-less camera: unsuitable, saying why
    assert cams[dark]["verdict"] == "unsuitable"
    assert any(r.startswith("too dark") for r in cams[dark]["reasons"])
    assert s["verdicts"] == {"suitable": 0, "marginal": 1, "unsuitable": 1}

    # JSON (what `vms trial report --json` prints) and the stored figures agree; the trial is listed
    assert json.loads(json.dumps(report_json(inventory, "t1")))["summary"] == s
    assert get_trial(inventory, str(report.id)).name == "t1"
    assert [t.name for t in list_trials(inventory)] == ["t1"]
    assert report.analyzers[0]["name"] == "hog_people" and report.analyzers[0]["version"]

    # HTML: one self-contained page, thumbnails with the boxes inline
    page = report_html(inventory, "t1", tmp_path / "html")
    text = page.read_text(encoding="utf-8")
    assert page.name == "index.html" and text.count("data:image/jpeg;base64,") == 3 + 2
    assert "marginal" in text and "unsuitable" in text and "hog_people" in text and "src='http" not in text


def test_bad_trial_input_is_refused_before_anything_is_stored(inventory, clip_frames):
    (cam,) = _cameras(inventory, 1)
    _store_set(inventory, "small", {cam: clip_frames[:2]})
    SampleSets(inventory).create("empty", {}, [cam], actor="test")
    with pytest.raises(NotFound, match="no sample set named 'nope'"):
        run_trial(inventory, "nope", ["motion"])
    with pytest.raises(TrialInputError, match="unknown analyzer 'yolo'"):
        run_trial(inventory, "small", ["yolo"])
    with pytest.raises(TrialInputError, match="holds no samples"):
        run_trial(inventory, "empty", ["motion"])
    with pytest.raises(TrialInputError, match="onnx: cannot read the model"):
        run_trial(inventory, "small", ["onnx:model=/nonexistent/m.onnx"])
    with pytest.raises(TrialInputError, match="unknown option 'speed'"):
        run_trial(inventory, "small", ["hog_people:speed=2"])
    assert list_trials(inventory) == []
    run_trial(inventory, "small", ["haar_face", "haar_plate"], name="again")
    with pytest.raises(DuplicateTrial):
        run_trial(inventory, "small", ["motion"], name="again")
    with pytest.raises(NotFound, match="no trial 'nope'"):
        report_json(inventory, "nope")
    assert [t.name for t in list_trials(inventory)] == ["again"]


def test_pruned_sample_files_are_counted_missing(inventory, clip_frames):
    (cam,) = _cameras(inventory, 1)
    _store_set(inventory, "gone", {cam: clip_frames[:3]})
    store = SampleStore(inventory)
    first = store.latest([cam])[cam]
    store.path_of(first.sha256).unlink()
    report = run_trial(inventory, "gone", ["motion"])
    assert report.summary["frames"] == 2 and report.summary["missing"] == 1


def test_cli_trial_run_list_report(tmp_path, clip_frames):
    """`vms trial run|list|report` as an operator runs them (SQLite: the CLI is the point, not the database)."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'vms.sqlite3'}", data_dir=tmp_path / "data",
                        secret_key=Fernet.generate_key().decode(), _env_file=None)  # fmt: skip
    inv = Inventory(settings)
    inv.upgrade()
    (cam,) = _cameras(inv, 1)
    _store_set(inv, "cli-set", {cam: clip_frames[:3]})
    inv.engine.dispose()
    env = vms_env(settings, tmp_path)

    bad = run_vms(env, "trial", "run", "cli-set", "--analyzer", "nope")
    assert bad.returncode == 2 and "unknown analyzer 'nope'" in bad.stderr and "Traceback" not in bad.stderr

    done = run_vms(env, "trial", "run", "cli-set", "--analyzer", "haar_fullbody", "--analyzer", "motion",
                   "--name", "cli-1", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["name"] == "cli-1" and out["summary"]["detections"]["Person"] > 0

    listed = run_vms(env, "trial", "list")
    assert listed.returncode == 0 and "cli-1" in listed.stdout and "cli-set" in listed.stdout

    html_dir = tmp_path / "report"
    shown = run_vms(env, "trial", "report", "cli-1", "--html", str(html_dir))
    assert shown.returncode == 0, shown.stderr
    assert "haar_fullbody" in shown.stdout and "marginal" in shown.stdout
    assert (html_dir / "index.html").read_text(encoding="utf-8").count("data:image/jpeg") == 3


def test_a_trial_repeated_on_the_same_set_finds_the_same_objects(inventory, clip_frames):
    (cam,) = _cameras(inventory, 1)
    _store_set(inventory, "repeat", {cam: clip_frames[:3]})
    first = run_trial(inventory, "repeat", ["haar_fullbody", "motion"], name="r1")
    again = run_trial(inventory, "repeat", ["haar_fullbody", "motion"], name="r2")
    assert first.analyzers == again.analyzers  # names, versions and options recorded with each trial

    def records(trial_id: int) -> list[tuple]:
        return [tuple(v for k, v in o.items() if k != "id") for o in trial_objects_of(inventory, trial_id)]

    assert records(first.id) == records(again.id) and records(first.id)
    assert first.summary["detections"] == again.summary["detections"]
