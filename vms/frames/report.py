"""A trial's report: figures per camera and overall, the suitability verdict with its reasons, as JSON and as one
self-contained HTML page (thumbnails with the boxes drawn, as inline data URIs).

The verdict says whether a camera's video is worth structured processing, from what the samples show:

- resolution: >= 720 lines is enough for faces and plates at usual distances; 360-719 lines serves people and
  vehicles (faces and plates only close up): marginal; under 360 lines (QCIF, CIF at 288): unsuitable.
- brightness: the median of the frames' mean grey outside the video-quality limits (VMS_VQD_DARK_MEAN,
  VMS_VQD_BRIGHT_MEAN: 40 and 210) is unsuitable; within 20 grey levels of a limit, marginal.
- blur: the median Laplacian variance (at the diagnosis' analysis width) under VMS_VQD_BLUR_VAR (100) is unsuitable;
  under twice that, marginal.
- video quality: most samples carrying a video-quality fault (signal loss, freeze, occlusion...) is unsuitable.
- detection yield: the share of frames where an analyzer found a person, face or vehicle. None at all is marginal
  (the scene may be empty, or the objects too small or far for these analyzers); it never makes a camera
  unsuitable on its own: an empty car park is no fault of the camera.

unsuitable if any check fails, marginal if any warns, else suitable.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vms.frames.analyzers import KINDS, STRUCTURED

LEVELS = ("ok", "warn", "fail")
VERDICTS = {"ok": "suitable", "warn": "marginal", "fail": "unsuitable"}
GOOD_LINES = 720
MIN_LINES = 360
MARGIN_GREY = 20.0
LOW_YIELD = 0.2


@dataclass(frozen=True, slots=True)
class Limits:
    dark_mean: float = 40.0
    bright_mean: float = 210.0
    blur_var: float = 100.0


@dataclass(slots=True)
class FrameResult:
    """What a trial learnt from one sample."""

    sample_id: int
    camera_id: int
    width: int
    height: int
    mean: float  # mean grey
    blur_var: float  # Laplacian variance at the diagnosis analysis width (vms.frames.vqd)
    faults: tuple[str, ...]  # the video-quality faults stored with the sample
    counts: dict[str, int] = field(default_factory=dict)  # kind -> detections (every analyzer)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: str  # ok | warn | fail
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "level": self.level, "reason": self.reason}


def _worst(checks: Iterable[Check]) -> str:
    return max((c.level for c in checks), key=LEVELS.index, default="ok")


def judge(frames: Sequence[FrameResult], limits: Limits) -> list[Check]:
    """The suitability checks of one camera's frames."""
    n = len(frames)
    checks: list[Check] = []
    sizes = Counter((f.width, f.height) for f in frames)
    (width, height), _ = sizes.most_common(1)[0]
    res = f"{width}x{height}"
    if height >= GOOD_LINES:
        checks.append(Check("resolution", "ok", f"{res}: enough pixels for people, vehicles, faces and plates"))
    elif height >= MIN_LINES:
        checks.append(
            Check(
                "resolution",
                "warn",
                f"{res}: under {GOOD_LINES} lines, people and vehicles only (faces and plates too few pixels)",
            )
        )
    else:
        checks.append(Check("resolution", "fail", f"{res}: under {MIN_LINES} lines, too few pixels for any object"))

    mean = statistics.median(f.mean for f in frames)
    if mean < limits.dark_mean:
        checks.append(Check("brightness", "fail", f"too dark: median mean grey {mean:.0f} < {limits.dark_mean:g}"))
    elif mean > limits.bright_mean:
        checks.append(Check("brightness", "fail", f"too bright: median mean grey {mean:.0f} > {limits.bright_mean:g}"))
    elif mean < limits.dark_mean + MARGIN_GREY or mean > limits.bright_mean - MARGIN_GREY:
        checks.append(Check("brightness", "warn", f"median mean grey {mean:.0f} is near a limit"))
    else:
        checks.append(Check("brightness", "ok", f"median mean grey {mean:.0f}"))

    blur = statistics.median(f.blur_var for f in frames)
    if blur < limits.blur_var:
        checks.append(Check("blur", "fail", f"blurred: median Laplacian variance {blur:.0f} < {limits.blur_var:g}"))
    elif blur < 2 * limits.blur_var:
        checks.append(Check("blur", "warn", f"soft: median Laplacian variance {blur:.0f} < {2 * limits.blur_var:g}"))
    else:
        checks.append(Check("blur", "ok", f"sharp: median Laplacian variance {blur:.0f}"))

    faulty = [f for f in frames if f.faults]
    if faulty:
        seen = Counter(x for f in faulty for x in f.faults)
        names = ", ".join(f"{k} ({v})" for k, v in seen.most_common())
        level = "fail" if len(faulty) * 2 > n else "warn"
        checks.append(Check("quality", level, f"{len(faulty)} of {n} samples with video-quality faults: {names}"))

    hits = sum(1 for f in frames if any(f.counts.get(k) for k in STRUCTURED))
    share = hits / n
    found = Counter({k: v for f in frames for k, v in f.counts.items() if k in STRUCTURED})
    what = ", ".join(f"{v} {k}" for k, v in found.most_common()) or "nothing"
    if hits == 0:
        checks.append(
            Check(
                "yield",
                "warn",
                f"no person, face or vehicle on {n} frame(s): an empty scene, or objects too small or far",
            )
        )
    elif share < LOW_YIELD:
        checks.append(Check("yield", "warn", f"objects on {hits} of {n} frames ({what})"))
    else:
        checks.append(Check("yield", "ok", f"objects on {hits} of {n} frames ({what})"))
    return checks


def summarise(
    frames: Sequence[FrameResult],
    timings: Mapping[str, Mapping[str, Any]],
    cameras: Mapping[int, Mapping[str, Any]],
    limits: Limits,
    *,
    missing: int = 0,
) -> dict[str, Any]:
    """The report's figures: overall and per camera. ``timings``: analyzer -> {version, frames, seconds,
    cpu_seconds, detections: {kind: n}}; ``cameras``: id -> {device_id, name}."""
    by_camera: dict[int, list[FrameResult]] = defaultdict(list)
    for f in frames:
        by_camera[f.camera_id].append(f)
    per_camera = []
    verdicts: Counter[str] = Counter()
    for cid in sorted(by_camera):
        fs = by_camera[cid]
        checks = judge(fs, limits)
        verdict = VERDICTS[_worst(checks)]
        verdicts[verdict] += 1
        counts: Counter[str] = Counter()
        for f in fs:
            counts.update(f.counts)
        info = cameras.get(cid, {})
        per_camera.append(
            {
                "camera_id": cid,
                "device_id": info.get("device_id"),
                "name": info.get("name"),
                "frames": len(fs),
                "resolution": Counter(f"{f.width}x{f.height}" for f in fs).most_common(1)[0][0],
                "brightness": round(statistics.median(f.mean for f in fs), 1),
                "blur_var": round(statistics.median(f.blur_var for f in fs), 1),
                "detections": {k: counts[k] for k in KINDS if counts[k]},
                "frames_with_objects": sum(1 for f in fs if any(f.counts.get(k) for k in STRUCTURED)),
                "verdict": verdict,
                "reasons": [c.reason for c in checks if c.level != "ok"] or ["every check passed"],
                "checks": [c.to_dict() for c in checks],
            }
        )
    total: Counter[str] = Counter()
    frames_with: Counter[str] = Counter()
    for f in frames:
        total.update(f.counts)
        frames_with.update(k for k, v in f.counts.items() if v)
    analyzers = {}
    for name, t in timings.items():
        seconds = float(t.get("seconds", 0.0))
        cpu = float(t.get("cpu_seconds", 0.0))
        n = int(t.get("frames", 0))
        analyzers[name] = {
            "version": t.get("version"),
            "frames": n,
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "fps": round(n / seconds, 2) if seconds > 0 else None,
            "cpu_fps": round(n / cpu, 2) if cpu > 0 else None,
            "detections": {k: v for k, v in sorted(dict(t.get("detections", {})).items())},
        }
    return {
        "frames": len(frames),
        "missing": missing,
        "cameras": len(by_camera),
        "detections": {k: total[k] for k in KINDS if total[k]},
        "frames_with": {k: frames_with[k] for k in KINDS if frames_with[k]},
        "analyzers": analyzers,
        "verdicts": {v: verdicts[v] for v in ("suitable", "marginal", "unsuitable")},
        "limits": {"dark_mean": limits.dark_mean, "bright_mean": limits.bright_mean, "blur_var": limits.blur_var},
        "per_camera": per_camera,
    }


# --- HTML ------------------------------------------------------------------------------------------------------

COLOURS = {  # BGR
    "Person": (0, 200, 0),
    "Face": (0, 215, 255),
    "MotorVehicle": (255, 80, 0),
    "NonMotorVehicle": (255, 0, 200),
    "Motion": (160, 160, 160),
}
THUMB_WIDTH = 480


@dataclass(frozen=True, slots=True)
class Box:
    kind: str
    box: tuple[int, int, int, int]
    score: float
    analyzer: str
    plate_no: str | None = None


def draw(image: np.ndarray, boxes: Sequence[Box], width: int = THUMB_WIDTH) -> bytes:
    """A JPEG of the frame at most ``width`` wide with the boxes drawn (colour by kind, Motion thin)."""
    scale = min(1.0, width / image.shape[1])
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1.0 else image.copy()
    for b in sorted(boxes, key=lambda b: b.kind != "Motion"):  # motion first, objects over it
        x1, y1, x2, y2 = (round(v * scale) for v in b.box)
        colour = COLOURS.get(b.kind, (0, 0, 255))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1 if b.kind == "Motion" else 2)
        if b.kind != "Motion":
            label = f"{b.kind} {b.score:.2f}" + (f" {b.plate_no}" if b.plate_no else "")
            cv2.putText(out, label, (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("cannot encode a thumbnail")
    return bytes(buf)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.suitable{color:#060}.marginal{color:#a60}.unsuitable{color:#b00}
.cam{border-top:2px solid #ddd;margin-top:1.5em;padding-top:.5em}.thumbs img{margin:.25em;border:1px solid #999}
.ok{color:#060}.warn{color:#a60}.fail{color:#b00}small{color:#666}
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def render_html(
    trial: Mapping[str, Any],
    summary: Mapping[str, Any],
    thumbs: Mapping[int, Sequence[tuple[int, bytes | None]]],
) -> str:
    """The page. ``thumbs``: camera id -> [(sample id, JPEG with boxes or None when the file is gone)]."""
    esc = html.escape
    title = f"Trial {trial.get('name')}"
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>",
        "<p>"
        + esc(
            f"sample set {trial.get('set')}, {trial.get('status')}, started {trial.get('started_at')}, "
            f"finished {trial.get('finished_at') or '-'}"
        )
        + "</p>",
    ]
    verdicts = summary.get("verdicts", {})
    parts.append("<h2>Overall</h2>")
    parts.append(
        _table(
            ["frames", "cameras", "missing files", "suitable", "marginal", "unsuitable"],
            [
                [
                    summary.get("frames", 0),
                    summary.get("cameras", 0),
                    summary.get("missing", 0),
                    verdicts.get("suitable", 0),
                    verdicts.get("marginal", 0),
                    verdicts.get("unsuitable", 0),
                ]
            ],
        )
    )
    det = summary.get("detections", {})
    fw = summary.get("frames_with", {})
    parts.append(_table(["kind", "detections", "frames with"], [[k, det[k], fw.get(k, 0)] for k in det]))
    parts.append("<h2>Analyzers</h2>")
    parts.append(
        _table(
            ["analyzer", "version", "frames", "frames/s", "CPU frames/s", "detections"],
            [
                [
                    name,
                    a.get("version"),
                    a.get("frames"),
                    a.get("fps") if a.get("fps") is not None else "-",
                    a.get("cpu_fps") if a.get("cpu_fps") is not None else "-",
                    ", ".join(f"{k} {v}" for k, v in a.get("detections", {}).items()) or "-",
                ]
                for name, a in summary.get("analyzers", {}).items()
            ],
        )
    )
    legend = " ".join(
        f"<span style='color:#{c[2]:02x}{c[1]:02x}{c[0]:02x}'>&#9632; {esc(k)}</span>" for k, c in COLOURS.items()
    )
    parts.append(f"<h2>Cameras</h2><p>{legend}</p>")
    for cam in summary.get("per_camera", []):
        cid = cam["camera_id"]
        label = " ".join(str(x) for x in (cam.get("device_id"), cam.get("name")) if x) or f"camera {cid}"
        verdict = cam.get("verdict", "")
        parts.append(f"<div class='cam'><h3>{esc(label)} <small>#{cid}</small> ")
        parts.append(f"<span class='{esc(verdict)}'>{esc(verdict)}</span></h3>")
        parts.append(
            "<ul>"
            + "".join(
                f"<li class='{esc(c['level'])}'>{esc(c['check'])}: {esc(c['reason'])}</li>" for c in cam["checks"]
            )
            + "</ul>"
        )
        d = cam.get("detections", {})
        parts.append(
            "<p>"
            + esc(
                f"{cam['frames']} frame(s), {cam['resolution']}, "
                + (", ".join(f"{k} {v}" for k, v in d.items()) or "no detections")
            )
            + "</p><div class='thumbs'>"
        )
        for sample_id, jpeg in thumbs.get(cid, ()):
            if jpeg is None:
                parts.append(f"<p><small>sample {sample_id}: file pruned</small></p>")
                continue
            data = base64.b64encode(jpeg).decode("ascii")
            parts.append(
                f"<img alt='sample {sample_id}' title='sample {sample_id}' src='data:image/jpeg;base64,{data}'>"
            )
        parts.append("</div></div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_html(out_dir: Path, page: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
