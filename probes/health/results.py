"""Typed results of a staged health check, shared by the prober (probes.health) and the service (vms.health)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["OUTCOMES", "STAGES", "CheckResult", "FrameVerdict", "Outcome", "StageResult"]

# In order: a check stops at the first stage that fails. "frame" runs through a frame-stage hook (vms.frames).
STAGES: Final = ("tcp", "onvif", "login", "stream", "rtsp", "snapshot", "frame")

# ok: every selected stage passed; off: tcp or onvif failed and nothing was heard; defect: the device answered but
# a later stage failed; deadline: the sweep's deadline came first (not a failure: it changes no status).
Outcome = Literal["ok", "defect", "off", "deadline"]
OUTCOMES: Final = ("ok", "defect", "off", "deadline")


@dataclass(frozen=True, slots=True)
class StageResult:
    stage: str
    ok: bool
    ms: float
    cause: str | None = None  # probes.errors.Cause values, rtsp_*, snapshot_*, deadline
    detail: str = ""  # for operators; never holds credentials


@dataclass(frozen=True, slots=True)
class CheckResult:
    camera_id: int
    at: dt.datetime  # UTC, when the check started
    stages: tuple[StageResult, ...]
    outcome: Outcome
    stage: str  # the last stage run (the failing one when not ok)
    cause: str | None = None
    clock_offset_s: float | None = None  # device clock minus ours; positive = device ahead
    stream_uri: str | None = None  # as the device returned it now (credentials removed)
    # Stage findings for storage and display, e.g. {"codec": "H264", "width": 1920, "height": 1080,
    # "snapshot_width": 352, "snapshot_height": 288, "snapshot_bytes": 20480}
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True, slots=True)
class FrameVerdict:
    """What a frame stage found: ok, or the cause (the sampler's frame_*/rtsp_*/snapshot_*/address_refused, or
    vqd_<fault> for a picture that failed its quality checks). ``details`` go into the result's details (sample_id,
    faults, width, height, codec...): plain JSON values, never a credential."""

    ok: bool
    cause: str | None = None
    detail: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
