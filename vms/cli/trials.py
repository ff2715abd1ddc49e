"""`vms trial run|list|report`: structured-processing trials over a sample set (vms.frames.trials).

Registered from vms.cli.main; the helpers of that module (console, JSON output, errors to exit 2, progress bar) are
imported inside the commands, and so is everything heavy: `vms --help` imports none of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

trial_app = typer.Typer(
    no_args_is_help=True,
    help="Structured-processing trials: analyzers over a sample set, a verdict per camera.",
)


@trial_app.command("run")
def trial_run(
    set_name: Annotated[str, typer.Argument(metavar="SET", help="the sample set to analyze")],
    analyzer: Annotated[
        list[str] | None,
        typer.Option(
            "--analyzer",
            help="an analyzer, repeated: hog_people, haar_face, haar_fullbody, haar_plate, motion, "
            "onnx:model=PATH[,size=WxH,layout=yolov5|yolov8|xyxy,classes=coco|0:Person;2:MotorVehicle,score=0.25]; "
            "options as NAME:key=value,... (default: all but onnx)",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="the trial's name (default SET@time)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Run analyzers over every sample of a set; store the objects found and print the report."""
    from vms.cli.main import emit_json, errors_to_exit, inventory, progress_bar

    with errors_to_exit():
        from vms.frames.analyzers import DEFAULT_ANALYZERS
        from vms.frames.trials import run_trial

        inv = inventory()
        with progress_bar(not as_json and sys.stderr.isatty()) as bar:
            report = run_trial(inv, set_name, analyzer or DEFAULT_ANALYZERS, name, progress=bar)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report.to_dict())


@trial_app.command("list")
def trial_list(
    limit: Annotated[int, typer.Option(help="the newest N trials", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """The trials, newest first."""
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.frames.trials import list_trials

        found = list_trials(inventory(), limit=limit)
    if as_json:
        emit_json([{k: v for k, v in t.to_dict().items() if k != "summary"} for t in found])
        return
    t = Table("id", "name", "set", "status", "started", "frames", "cameras", "suitable", "marginal", "unsuitable")
    for tr in found:
        v = tr.summary.get("verdicts", {})
        t.add_row(
            str(tr.id),
            tr.name,
            tr.set_name,
            tr.status,
            f"{tr.started_at:%Y-%m-%d %H:%M:%S}",
            str(tr.summary.get("frames", "")),
            str(tr.summary.get("cameras", "")),
            *(str(v.get(k, "")) for k in ("suitable", "marginal", "unsuitable")),
        )
    console.print(t)


@trial_app.command("report")
def trial_report(
    trial: Annotated[str, typer.Argument(metavar="TRIAL", help="the trial's name or id")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="also write DIR/index.html: thumbnails with boxes, self-contained")
    ] = None,
) -> None:
    """A trial's report: detections by kind, frames/s per analyzer, a verdict per camera with its reasons."""
    from vms.cli.main import emit_json, err, errors_to_exit, inventory

    with errors_to_exit():
        from vms.frames.trials import report_html, report_json

        inv = inventory()
        data = report_json(inv, trial)
        page = report_html(inv, trial, html) if html is not None else None
    if as_json:
        emit_json(data)
    else:
        _print_report(data)
    if page is not None:
        err.print(f"report page: {page}")


def _print_report(data: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console

    s = data.get("summary", {})
    console.print(
        escape(
            f"trial {data['name']} (#{data['id']}) on sample set {data['set']}: {data['status']}; "
            f"{s.get('frames', 0)} frame(s) of {s.get('cameras', 0)} camera(s)"
            + (f", {s['missing']} sample file(s) gone" if s.get("missing") else "")
        )
    )
    t = Table("analyzer", "version", "frames", "frames/s", "CPU frames/s", "detections")
    for name, a in s.get("analyzers", {}).items():
        found = ", ".join(f"{k} {v}" for k, v in a.get("detections", {}).items()) or "-"
        fps = "-" if a.get("fps") is None else f"{a['fps']:.1f}"
        cpu = "-" if a.get("cpu_fps") is None else f"{a['cpu_fps']:.1f}"
        t.add_row(name, escape(str(a.get("version"))), str(a.get("frames")), fps, cpu, found)
    console.print(t)
    v = s.get("verdicts", {})
    console.print(
        "detections: "
        + (", ".join(f"{k} {n}" for k, n in s.get("detections", {}).items()) or "none")
        + f"; cameras suitable {v.get('suitable', 0)}, marginal {v.get('marginal', 0)}, "
        f"unsuitable {v.get('unsuitable', 0)}"
    )
    c = Table("camera", "name", "frames", "resolution", "objects", "verdict", "reasons")
    for cam in s.get("per_camera", []):
        c.add_row(
            escape(str(cam.get("device_id") or cam["camera_id"])),
            escape(str(cam.get("name") or "")),
            str(cam["frames"]),
            cam["resolution"],
            ", ".join(f"{k} {n}" for k, n in cam.get("detections", {}).items()) or "-",
            cam["verdict"],
            escape("; ".join(cam.get("reasons", []))),
        )
    console.print(c)
