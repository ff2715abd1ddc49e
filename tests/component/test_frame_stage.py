"""The health check's ``frame`` stage (probes.health.check with a FrameStage hook) and frame sweeps (vms.health.sweep
with vms.frames.stage.FrameStageRunner) over the simulated ONVIF fleet, whose stream URIs point at the real
GStreamer RTSP server on the devices' own addresses.

The hook gets the stream URI the stream stage found (else the inventory's), its findings land in the result's
details, and it is cut at its timeout (frame_timeout). A frame sweep stores a sample per camera and marks the
cameras ON; a stream URI the address policy refuses gives address_refused with nothing connected; a dark picture
takes a camera to DEFECT after the hysteresis count, a no-signal picture to VLOST. Cameras without an ONVIF address
but with a stream URI are checkable by a frame-only sweep. Every database test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from sqlalchemy import select

from probes.health.check import CheckTarget, StageTimeouts, check_camera, check_many, select_stages
from probes.health.results import FrameVerdict
from probes.media import MediaFailure, rtsp_describe
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import make_session
from probes.policy import AddressPolicy, Refusal, check_async
from probes.sim import SimFleet, build_fleet
from probes.sim.devices import DEFAULT_PASSWORD, DEFAULT_USERNAME
from probes.sim.rtsp import RtspServer, start_rtsp_server
from tests.estates import register_estate
from tests.fleets import rtsp_fleet_in_thread
from tests.videos import make_clip
from vms.catalog.domain import Observation, SourceKind
from vms.frames.store import SampleSets, SampleStore
from vms.health.service import Health
from vms.health.status import State, event_name, step
from vms.health.sweep import Group, SweepRequest, run_sweep
from vms.store import repository as repo
from vms.store.models import camera_references, cameras, frame_samples

COUNT = 5
GOOD = (Credential(DEFAULT_USERNAME, DEFAULT_PASSWORD),)
ONVIF = ("tcp", "onvif", "login", "stream")
TIMEOUTS = StageTimeouts(tcp=1.0, onvif=1.5, login=1.5, stream=2.0, frame=3.0)
OFFLINE, DARK, REFUSED, LOST = 1, 2, 3, 4  # device 0: a good picture throughout


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{60 + pid % 30}.{(pid // 30) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(COUNT, fault_mix={}, faults_by_index={1: {"offline"}},
                          auth_by_index={i: "both" for i in range(COUNT)}, base_host=_base_host(), port=0,
                          rtsp_mounts=1)  # one mount: every device serves the same moving SMPTE bars
    # unshared: the few cameras here are sampled at once, and a shared media can abort gst-rtsp-server 1.22 then
    sim = SimFleet(devices=devices, discovery=False, lock_period_s=600.0, rtsp_shared=False)
    with rtsp_fleet_in_thread(sim) as running:
        yield running


def _ledger_host() -> str:
    return _base_host().rsplit(".", 1)[0] + ".200"  # a camera of this run's own, known only to a ledger


@pytest.fixture(scope="module")
def faulty(fleet: SimFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RtspServer]]:
    """The real GStreamer server once more per picture fault, on the addresses of the cameras that show it."""
    clips = tmp_path_factory.mktemp("clips")
    servers: dict[str, RtspServer] = {}
    try:
        # A server per camera: two viewers of one shared file-source media, one leaving as the other joins, can
        # abort gst-rtsp-server 1.22 (gst_rtsp_media_get_rates assertion), which is not what these tests are about.
        for name, kind, hosts in (("dark", "dark", [fleet.device(DARK).host]),
                                  ("dark_ledger", "dark", [_ledger_host()]),
                                  ("no_signal_blue", "no_signal_blue", [fleet.device(LOST).host])):
            # long enough for every sweep of the test: a shared file source ends at the clip's end (no loop)
            clip = make_clip(kind, clips, seconds=30.0, size=(320, 240))
            servers[name] = start_rtsp_server(1, video=clip, device_hosts=hosts, shared=False)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@dataclass
class DescribeStage:
    """A frame stage of the tests' own: the address policy, then RTSP OPTIONS+DESCRIBE of the URI it is given (the
    real server answers); what it was given is kept for the test to see."""

    policy: AddressPolicy = field(default_factory=AddressPolicy)
    seen: list[tuple[int, str | None, str, str | None]] = field(default_factory=list)
    hang: bool = False

    async def __call__(self, target: CheckTarget, stream_uri: str | None, timeout: float) -> FrameVerdict:
        user = target.credentials[0] if target.credentials else None
        self.seen.append((target.camera_id, stream_uri, target.host, user.username if user else None))
        if self.hang:
            await asyncio.sleep(3600)
        if stream_uri is None:
            return FrameVerdict(False, "not_supported", "no stream URI")
        verdict = await check_async(self.policy, stream_uri, target.host, timeout=timeout)
        if isinstance(verdict, Refusal):
            return FrameVerdict(False, "address_refused", str(verdict))
        info = await rtsp_describe(stream_uri, username=user.username if user else None,
                                   password=user.password if user else None, timeout=timeout, policy=self.policy,
                                   device_ip=target.host)
        if isinstance(info, MediaFailure):
            return FrameVerdict(False, info.cause, info.detail)
        return FrameVerdict(True, details={"codec": info.codec, "frame_source": "rtsp"})


def test_the_frame_stage_needs_a_hook() -> None:
    with pytest.raises(ValueError, match="frame stage: needs a frame sampler"):
        select_stages(["stream", "frame"])
    assert select_stages(["frame", "tcp"], frame=True) == ("tcp", "frame")


async def test_the_hook_gets_the_stream_uri_the_device_reports_and_its_details_land(fleet: SimFleet) -> None:
    d = fleet.device(0)
    stale = f"rtsp://{d.host}:554/gone"  # the inventory's URI is stale: the device reports its own
    stage = DescribeStage()
    targets = [CheckTarget(0, d.host, d.port, credentials=GOOD, stream_uri=stale)]
    async with make_session() as session:
        results = [r async for r in check_many(targets, stages=(*ONVIF, "frame"), budget=LoginBudget(),
                                               session=session, timeouts=TIMEOUTS, frame_stage=stage)]
    (result,) = results
    assert (result.outcome, result.stage, result.cause) == ("ok", "frame", None), result
    assert [s.stage for s in result.stages] == [*ONVIF, "frame"]
    assert stage.seen == [(0, d.rtsp_url_base, d.host, DEFAULT_USERNAME)], stage.seen
    assert result.details["codec"] == "H264" and result.details["frame_source"] == "rtsp", result.details
    assert result.details["stream_uri_changed"] is True

    # Without an ONVIF stage: the inventory's URI; a URI on another loopback address is refused.
    frame_only = CheckTarget(1, d.host, credentials=GOOD, stream_uri=d.rtsp_url_base.replace(d.host, "127.0.0.1"))
    async with make_session() as session:
        refused = await check_camera(frame_only, stages=("frame",), session=session, budget=LoginBudget(),
                                     timeouts=TIMEOUTS, frame_stage=stage)
    assert (refused.outcome, refused.stage, refused.cause) == ("defect", "frame", "address_refused"), refused
    assert stage.seen[-1][1] == frame_only.stream_uri


async def test_a_hanging_frame_stage_is_cut_at_its_timeout(fleet: SimFleet) -> None:
    d = fleet.device(0)
    stage = DescribeStage(hang=True)
    target = CheckTarget(2, d.host, credentials=GOOD, stream_uri=d.rtsp_url_base)
    started = time.monotonic()
    async with make_session() as session:
        result = await check_camera(target, stages=("frame",), session=session, budget=LoginBudget(),
                                    timeouts=replace(TIMEOUTS, frame=0.5), frame_stage=stage)
    elapsed = time.monotonic() - started
    assert (result.outcome, result.stage, result.cause) == ("defect", "frame", "frame_timeout"), result
    assert elapsed < 3.0, elapsed


def test_video_lost_or_faulty_picture_events() -> None:
    for cause in ("vqd_signal_loss", "frame_timeout", "frame_decode", "rtsp_refused", "rtsp_timeout"):
        assert event_name("DEFECT", "frame", cause) == "VLOST", cause
    for cause in ("vqd_too_dark", "vqd_blur", "vqd_freeze", "address_refused", "frame_too_large"):
        assert event_name("DEFECT", "frame", cause) == "DEFECT", cause
    assert event_name("DEFECT", "rtsp", "rtsp_not_found") == "VLOST"
    assert event_name("DEFECT", "login", "auth") == "DEFECT"
    assert event_name("OFF", "frame", "vqd_signal_loss") == "OFF"
    state = State("ON")
    for _ in range(2):
        state, change = step(state, "defect", stage="frame", cause="vqd_too_dark", fail_count=3)
        assert change is None
    state, change = step(state, "defect", stage="frame", cause="vqd_too_dark", fail_count=3)
    assert change is not None and (change.status, change.event) == ("DEFECT", "DEFECT")


def test_a_frame_request_travels_to_workers_and_bad_ones_are_one_line() -> None:
    req = SweepRequest(stages=("frame",), group=Group("region", "3713"), sample_set="north", frames=3, spacing_s=1.5,
                       source="snapshot")
    req.validate()
    assert SweepRequest.from_json(req.to_json()) == req
    assert SweepRequest.from_json({"stages": ["tcp"]}) == SweepRequest(stages=("tcp",))  # an older worker's shard
    for bad, message in (
        (SweepRequest(stages=("tcp",), sample_set="s"), "need the frame stage"),
        (SweepRequest(stages=("frame",), frames=0), "frames must be 1 to"),
        (SweepRequest(stages=("frame",), spacing_s=float("nan")), "spacing"),
        (SweepRequest(stages=("frame",), source="usb"), "unknown frame source 'usb'"),
        (SweepRequest(stages=("frame",), sample_set=" "), "sample set name"),
    ):
        with pytest.raises(ValueError, match=message):
            bad.validate()


def _set_stream(inv, cid: int, uri: str) -> None:
    with inv.session() as s:
        s.execute(cameras.update().where(cameras.c.id == cid).values(stream_uri=uri))


def _latest(inv, cid: int) -> tuple[str | None, str | None, str | None]:
    latest = Health(inv).latest(cid)
    assert latest is not None, cid
    return latest["status"], latest["stage"], latest["cause"]


def _frame_sweep(inv, **kw: object) -> dict:
    return run_sweep(inv, SweepRequest(stages=("frame",), timeouts=TIMEOUTS, concurrency=16, **kw))  # type: ignore[arg-type]


def test_a_frame_sweep_samples_judges_and_keeps_statuses(inventory, fleet: SimFleet, faulty, tmp_path: Path) -> None:
    ids = register_estate(inventory, fleet, OFFLINE)
    ledger = _ledger_host()
    inventory.ingest_observations(  # no ONVIF address, but a stream URI: a frame sweep checks it
        [Observation("ledger:metro", SourceKind.LEDGER, "local:M-9",
                     {"name": "Platform 9", "local_id": "M-9", "ip_address": ledger,
                      "stream_uri": faulty["dark_ledger"].url("/cam0").replace("127.0.0.1", ledger)})],
        source="ledger:metro", kind=SourceKind.LEDGER, snapshot=False, actor="test",
    )
    with inventory.session(write=False) as s:
        (metro,) = repo.camera_ids_by(s, "ip_address", ledger)
    # A stream URI on another address than the camera's: refused by the address policy, nothing connects there.
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.setblocking(False)
    _set_stream(inventory, ids[REFUSED], f"rtsp://127.0.0.1:{trap.getsockname()[1]}/cam0")
    try:
        first = _frame_sweep(inventory, sample_set="baseline")
        with pytest.raises(BlockingIOError):
            trap.accept()
    finally:
        trap.close()
    assert first["stages"] == ["frame"] and first["planned"] == len(ids) + 2, first
    assert first["not_checkable"] == 1, first  # the estate's ledger camera: no stream or snapshot URI
    assert first["outcome"] == {"ok": 3, "defect": 3}, first
    assert first["cause"] == {"frame": {"address_refused": 1, "rtsp_refused": 1, "vqd_too_dark": 1}}, first
    assert _latest(inventory, ids[REFUSED]) == ("DEFECT", "frame", "address_refused")
    assert _latest(inventory, ids[OFFLINE]) == ("DEFECT", "frame", "rtsp_refused")
    assert _latest(inventory, metro) == ("DEFECT", "frame", "vqd_too_dark")
    good = [ids[0], ids[DARK], ids[LOST]]
    store = SampleStore(inventory)
    latest = store.latest(good)
    for cid in good:
        assert _latest(inventory, cid) == ("ON", "frame", None), cid
        details = Health(inventory).latest(cid)["details"]  # type: ignore[index]
        sample = latest[cid]
        assert details["sample_id"] == sample.id and details["faults"] == [], details
        assert (sample.width, sample.height, sample.codec, sample.source) == (320, 240, "H264", "rtsp")
        assert store.path_of(sample.sha256).read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    sample_set = SampleSets(inventory).get("baseline")
    assert sample_set is not None and len(sample_set.camera_ids) == first["planned"]  # every camera it targeted
    assert set(sample_set.camera_ids) >= {*ids.values(), metro}
    assert sample_set.settings["stages"] == ["frame"]
    with inventory.session(write=False) as s:
        in_set = sorted(s.scalars(select(frame_samples.c.camera_id).where(frame_samples.c.set_id == sample_set.id)))
        referenced = sorted(s.scalars(select(camera_references.c.camera_id)))
    assert in_set == sorted([*good, metro]), in_set  # the dark one is kept too, with its fault
    assert referenced == sorted(good)  # the first fault-free sample of each: its reference frame

    # The picture goes dark on one camera and is lost on another: DEFECT and VLOST once the hysteresis allows.
    _set_stream(inventory, ids[DARK], faulty["dark"].url("/cam0").replace("127.0.0.1", fleet.device(DARK).host))
    _set_stream(inventory, ids[LOST],
                faulty["no_signal_blue"].url("/cam0").replace("127.0.0.1", fleet.device(LOST).host))
    fail_count = inventory.settings.health_fail_count
    for n in range(1, fail_count + 1):
        summary = _frame_sweep(inventory, sample_set="baseline")  # reused by name
        expected = ("ON", "frame", "vqd_too_dark") if n < fail_count else ("DEFECT", "frame", "vqd_too_dark")
        assert _latest(inventory, ids[DARK]) == expected, (n, summary)
    assert _latest(inventory, ids[LOST]) == ("DEFECT", "frame", "vqd_signal_loss")
    assert _latest(inventory, ids[0]) == ("ON", "frame", None)
    events = {(e["camera_id"], e["event"], e["cause"]) for e in Health(inventory).events(limit=50)}
    assert (ids[DARK], "DEFECT", "vqd_too_dark") in events and (ids[LOST], "VLOST", "vqd_signal_loss") in events
    with inventory.session(write=False) as s:
        assert repo.camera(s, ids[DARK])["status"] == "DEFECT"  # type: ignore[index]
    assert len(SampleSets(inventory).list()) == 1

    # --source snapshot: the camera's snapshot URI, spaced pictures, each kept.
    with inventory.session() as s:
        s.execute(cameras.update().where(cameras.c.id == ids[0]).values(tags=["snap"]))
    snap = _frame_sweep(inventory, group=Group("tag", "snap"), source="snapshot", frames=2, spacing_s=0.1)
    assert snap["planned"] == 1 and snap["checked"] == 1 and not snap["cause"].get("frame", {}).get(
        "snapshot_timeout"), snap
    details = Health(inventory).latest(ids[0])["details"]  # type: ignore[index]
    assert details["frame_source"] == "snapshot" and details["samples"] == 2, details
    assert (store.latest([ids[0]])[ids[0]].width, details["width"]) == (352, 352)
