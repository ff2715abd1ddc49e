"""A camera's status with hysteresis: pure, no I/O (the service stores the state between checks).

Status: ON, DEFECT (the device answers but a later stage fails), OFF (nothing heard), or unknown (None: never
checked). From unknown the first result sets the status at once. Leaving ON takes ``fail_count`` consecutive
failed results (OFF and DEFECT results count together; the last one decides which); returning to ON takes
``recover_count`` consecutive good ones; moving between OFF and DEFECT takes ``fail_count`` consecutive results of
the other kind. A result equal to the current status breaks any run. A ``deadline`` result changes nothing.

Every change is an event in the GB/T 28181 vocabulary: ON, OFF, DEFECT, or VLOST when the camera became DEFECT
because its video was lost: an ``rtsp_*`` cause at any stage, or at the ``frame`` stage a picture diagnosed as
signal loss (``vqd_signal_loss``) or a stream that gave no picture (``frame_timeout``, ``frame_decode``). Any other
video-quality fault (``vqd_too_dark``, ``vqd_blur``...) is a DEFECT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["EVENTS", "STATUSES", "Change", "State", "Status", "event_name", "status_of", "step"]

Status = Literal["ON", "DEFECT", "OFF"]
STATUSES: Final = ("ON", "DEFECT", "OFF")
EVENTS: Final = ("ON", "OFF", "VLOST", "DEFECT")

_TARGET: Final[dict[str, Status]] = {"ok": "ON", "defect": "DEFECT", "off": "OFF"}


@dataclass(frozen=True, slots=True)
class State:
    """What the service keeps per camera: the status and the run of results pointing away from it."""

    status: Status | None = None
    pending: Status | None = None  # the status the current run points to (the last result's)
    streak: int = 0  # consecutive results in that run


@dataclass(frozen=True, slots=True)
class Change:
    previous: Status | None
    status: Status
    event: str  # one of EVENTS


def status_of(outcome: str) -> Status | None:
    """The status a result points to; None for ``deadline`` (and anything unknown)."""
    return _TARGET.get(outcome)


_VIDEO_LOST: Final = frozenset({"vqd_signal_loss", "frame_timeout", "frame_decode"})


def event_name(status: Status, stage: str | None, cause: str | None) -> str:
    text = cause or ""
    if status == "DEFECT" and (text.startswith("rtsp_") or (stage == "frame" and text in _VIDEO_LOST)):
        return "VLOST"
    return status


def _same_run(status: Status, pending: Status | None, target: Status) -> bool:
    if pending is None:
        return False
    if status == "ON":  # leaving ON: OFF and DEFECT results are one run of failures
        return pending != "ON" and target != "ON"
    return pending == target


def step(
    state: State,
    outcome: str,
    *,
    stage: str | None = None,
    cause: str | None = None,
    fail_count: int = 3,
    recover_count: int = 2,
) -> tuple[State, Change | None]:
    """The state after one result, and the status change it made (if any)."""
    target = status_of(outcome)
    if target is None:
        return state, None
    current = state.status
    if current is None:
        return State(target), Change(None, target, event_name(target, stage, cause))
    if target == current:
        return (state if state.pending is None else State(current)), None
    streak = state.streak + 1 if _same_run(current, state.pending, target) else 1
    needed = recover_count if target == "ON" else fail_count
    if streak >= needed:
        return State(target), Change(current, target, event_name(target, stage, cause))
    return State(current, target, streak), None
