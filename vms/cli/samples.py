"""`vms samples list|show|sets|prune`, `vms vqd CAMERA` and `vms intact`: the stored frame samples (`vms sample`
takes them), a camera's video-quality diagnosis, and the intact rate.

Registered from vms.cli.main (``register(app)``); the helpers of that module (console, JSON output, errors to exit
2) are imported inside the commands, and so is everything heavy: `vms --help` imports none of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from vms.frames.store import SampleRow, SampleStore
    from vms.frames.vqd import Thresholds

samples_app = typer.Typer(
    no_args_is_help=True, help="Stored frame samples (`vms sample` takes them), their sets and their retention."
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
CameraArg = Annotated[str, typer.Argument(metavar="CAMERA", help="id, GB device ID, department number or MAC")]
LIMIT_MAX = 10_000


def register(app: typer.Typer) -> None:
    """Add `vms samples ...`, `vms vqd` and `vms intact` to the `vms` app."""
    app.add_typer(samples_app, name="samples")
    app.command("vqd")(vqd_cmd)
    app.command("intact")(intact_cmd)


# --- shared ------------------------------------------------------------------------------------------------


def _cameras(inv: Any, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """id -> device_id, local_id, name of these cameras."""
    from sqlalchemy import select

    from vms.store.models import cameras

    wanted = sorted(set(ids))
    out: dict[int, dict[str, Any]] = {}
    with inv.session(write=False) as s:
        for i in range(0, len(wanted), 5000):
            stmt = select(cameras.c.id, cameras.c.device_id, cameras.c.local_id, cameras.c.name).where(
                cameras.c.id.in_(wanted[i : i + 5000])
            )
            for r in s.execute(stmt):
                out[r.id] = {"device_id": r.device_id, "local_id": r.local_id, "name": r.name}
    return out


def _set_names(inv: Any, ids: Iterable[int | None]) -> dict[int, str]:
    from sqlalchemy import select

    from vms.store.models import sample_sets

    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    with inv.session(write=False) as s:
        return {
            r.id: r.name
            for r in s.execute(select(sample_sets.c.id, sample_sets.c.name).where(sample_sets.c.id.in_(wanted)))
        }


def _resolve(inv: Any, ref: str) -> int:
    with inv.session(write=False) as s:
        return int(inv.resolve_camera(s, ref))


def _sample_dict(
    store: SampleStore, row: SampleRow, cams: Mapping[int, Mapping[str, Any]], sets: Mapping[int, str]
) -> dict[str, Any]:
    """A sample as JSON: its row (no thumbnail), its camera's IDs and name, its set's name, its JPEG's path."""
    cam = cams.get(row.camera_id, {})
    data = row.to_dict()
    data.update(
        device_id=cam.get("device_id"),
        camera_name=cam.get("name"),
        set=sets.get(row.set_id) if row.set_id is not None else None,
        path=str(store.path_of(row.sha256)),
    )
    return data


def _camera_label(camera_id: int, cam: Mapping[str, Any] | None, *, with_name: bool = True) -> str:
    """'12 37131100001310000001 North gate': id, GB ID (else department number), name."""
    cam = cam or {}
    ident = cam.get("device_id") or cam.get("local_id")
    name = cam.get("name") if with_name else None
    return f"{camera_id}" + (f" {ident}" if ident else "") + (f" {name}" if name else "")


def _when(data: Mapping[str, Any]) -> str:
    return str(data["taken_at"])[:19].replace("T", " ")


def _latency(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f} ms"


def _metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def reasons_of(faults: Iterable[str], metrics: Mapping[str, Any], t: Thresholds) -> dict[str, str]:
    """Why each stored fault was found, from the metrics measured at sampling against the thresholds now (the
    wording of vms.frames.vqd.diagnose). A metric not stored: 'found at sampling'."""

    def num(name: str) -> float | None:
        value = metrics.get(name)
        return float(value) if isinstance(value, int | float) else None

    out: dict[str, str] = {}
    for fault in faults:
        why: str | None = None
        if fault == "signal_loss":
            peak, std = num("peak_share"), num("std")
            if peak is not None and peak > t.signal_peak_share:
                why = f"uniform screen: {peak:.1%} of pixels in one grey level"
            elif std is not None:
                why = f"uniform screen: grey std {std:.1f}"
        elif fault in ("too_dark", "too_bright") and (mean := num("mean")) is not None:
            why = (
                f"mean grey {mean:.1f} < {t.dark_mean:g}"
                if fault == "too_dark"
                else f"mean grey {mean:.1f} > {t.bright_mean:g}"
            )
        elif fault == "colour_cast" and (cast := num("cast")) is not None:
            why = f"chroma offset / spread {cast:.2f} > {t.cast_ratio:g}"
        elif fault == "low_contrast" and (std := num("std")) is not None:
            why = f"grey std {std:.1f} < {t.contrast_std:g}"
        elif fault == "blur" and (blur := num("blur_var")) is not None:
            why = f"Laplacian variance {blur:.1f} < {t.blur_var:g}"
        elif fault == "freeze" and (diff := num("freeze_diff")) is not None:
            n, pixel = num("freeze_samples"), num("freeze_pixel")
            why = (
                (f"the same picture in {n:.0f} samples: " if n else "the same picture: ")
                + (f"mean difference {diff:.2f} <= {t.freeze_diff:g}")
                + ("" if pixel is None else f", largest {pixel:.0f} <= {t.freeze_pixel:g}")
            )
        elif fault == "occlusion" and (region := num("occlusion")) is not None:
            why = f"{region:.0%} of the frame lost its detail against the reference (>= {t.occlusion_share:.0%})"
        elif fault == "noise" and (noise := num("noise")) is not None:
            why = f"noise sigma {noise:.1f} > {t.noise_sigma:g}"
        elif fault == "stripes" and (stripes := num("stripes")) is not None:
            why = f"periodic peak {stripes:.1f} x the spectrum median > {t.stripes_ratio:g}"
        out[fault] = why or "found at sampling"
    return out


# --- vms samples -------------------------------------------------------------------------------------------


@samples_app.command("list")
def samples_list(
    camera: Annotated[
        str | None, typer.Option("--camera", help="one camera: id, GB device ID, department number or MAC")
    ] = None,
    set_name: Annotated[str | None, typer.Option("--set", help="only the samples of this sample set")] = None,
    limit: Annotated[int, typer.Option(help="the newest N samples", min=1, max=LIMIT_MAX)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Stored samples, newest first: camera, time, source, resolution, codec, latency, faults."""
    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.frames.store import SampleStore

        inv = inventory()
        store = SampleStore(inv)
        camera_id = _resolve(inv, camera) if camera is not None else None
        rows = store.list(camera_id=camera_id, set_name=set_name, limit=limit)
        cams = _cameras(inv, (r.camera_id for r in rows))
        sets = _set_names(inv, (r.set_id for r in rows))
    items = [_sample_dict(store, r, cams, sets) for r in rows]
    if as_json:
        emit_json(items)
        return
    if not items:
        console.print(
            "no samples"
            + (" of that camera" if camera else "")
            + (" in that set" if set_name else "")
            + " (`vms sample` takes them)"
        )
        return
    t = Table(
        "id",
        "camera",
        "taken (UTC)",
        "source",
        "resolution",
        "codec",
        "latency",
        "faults",
        "set",
        title=f"{len(items)} samples, newest first",
    )
    for d in items:
        t.add_row(
            str(d["id"]),
            escape(_camera_label(d["camera_id"], cams.get(d["camera_id"]), with_name=False)),
            _when(d),
            d["source"],
            f"{d['width']}x{d['height']}",
            escape(str(d["codec"] or "")),
            _latency(d["latency_ms"]),
            escape(", ".join(d["faults"])) if d["faults"] else "-",
            escape(d["set"] or ""),
        )
    console.print(t)
    if len(items) == limit:
        console.print(f"the newest {limit}; --limit for more")


@samples_app.command("show")
def samples_show(
    sample_id: Annotated[int, typer.Argument(metavar="ID", help="the sample's id (`vms samples list`)")],
    as_json: JsonOpt = False,
) -> None:
    """One sample: its camera, time, source, resolution, codec, latency, faults, metrics and its JPEG's path."""
    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.errors import NotFound
        from vms.frames.store import SampleStore

        inv = inventory()
        store = SampleStore(inv)
        row = store.get(sample_id)
        if row is None:
            raise NotFound(f"no sample with id {sample_id} (`vms samples list` shows them)")
        cams = _cameras(inv, [row.camera_id])
        data = _sample_dict(store, row, cams, _set_names(inv, [row.set_id]))
        data["file_present"] = store.path_of(row.sha256).is_file()
    if as_json:
        emit_json(data)
        return
    label = _camera_label(row.camera_id, cams.get(row.camera_id))
    console.print(escape(f"sample {data['id']}: camera {label}, taken {_when(data)} UTC"))
    console.print(
        escape(
            f"{data['source']} {data['width']}x{data['height']} {data['codec'] or '?'}, latency "
            f"{_latency(data['latency_ms'])}, JPEG {data['bytes']:,} bytes"
            + (f"; set {data['set']}" if data["set"] else "")
            + (f"; sweep {data['sweep_id']}" if data["sweep_id"] else "")
        )
    )
    console.print("faults: " + (escape(", ".join(data["faults"])) if data["faults"] else "[green]none"))
    console.print(escape(f"file: {data['path']}") + ("" if data["file_present"] else " [yellow](gone: pruned?)"))
    if data["metrics"]:
        t = Table("metric", "value", title="metrics")
        for name, value in data["metrics"].items():
            t.add_row(escape(str(name)), _metric(value))
        console.print(t)


@samples_app.command("sets")
def samples_sets(as_json: JsonOpt = False) -> None:
    """Sample sets, newest first: when, by whom, how many cameras and samples, with which settings."""
    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.frames.store import SampleSets

        found = SampleSets(inventory()).list()
    if as_json:
        emit_json([{**s.to_dict(), "cameras": len(s.camera_ids)} for s in found])
        return
    if not found:
        console.print("no sample sets (`vms sample --set NAME` makes one)")
        return
    t = Table("id", "name", "created (UTC)", "by", "cameras", "samples", "settings", title=f"{len(found)} sample sets")
    for s in found:
        settings = ", ".join(f"{k} {v}" for k, v in s.settings.items() if v is not None and v != "")
        t.add_row(
            str(s.id),
            escape(s.name),
            f"{s.created_at:%Y-%m-%d %H:%M:%S}",
            escape(s.created_by),
            str(len(s.camera_ids)),
            str(s.samples),
            escape(settings),
        )
    console.print(t)


@samples_app.command("prune")
def samples_prune(
    keep: Annotated[
        int | None, typer.Option("--keep", help="samples kept per camera (default VMS_SAMPLES_KEEP_PER_CAMERA)", min=0)
    ] = None,
    max_age_days: Annotated[
        float | None,
        typer.Option("--max-age-days", help="older samples go (default VMS_SAMPLES_MAX_AGE_DAYS)", min=0.0),
    ] = None,
    orphans: Annotated[
        bool, typer.Option("--orphans", help="also remove sample files no row refers to (walks the samples folder)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete the samples beyond each camera's newest N and those older than D days (a camera's reference sample
    stays), then the files no sample refers to any more."""
    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.frames.store import SampleStore

        inv = inventory()
        kept = inv.settings.samples_keep_per_camera if keep is None else keep
        age = inv.settings.samples_max_age_days if max_age_days is None else max_age_days
        rep = SampleStore(inv).prune(keep_per_camera=kept, max_age_days=age, orphans=orphans, actor="cli")
    data = {"keep_per_camera": kept, "max_age_days": age, **rep.to_dict()}
    if as_json:
        emit_json(data)
        return
    console.print(
        f"pruned {rep.rows} samples of {rep.cameras} cameras (keeping {kept} per camera, none older than {age:g} "
        f"days); {rep.files} files removed, {rep.bytes_freed / 2**20:.1f} MiB freed"
    )
    kept_files = [
        (rep.shared, "shared with samples kept"),
        (rep.recent, "written in the last minutes (a sweep may be adding their rows)"),
        (rep.missing, "already gone"),
    ]
    notes = [f"{n} {what}" for n, what in kept_files if n]
    if orphans:
        notes.append(f"{rep.orphans} orphaned files removed")
    if notes:
        console.print("files: " + "; ".join(notes))


# --- vms vqd -----------------------------------------------------------------------------------------------


def vqd_cmd(
    camera: CameraArg,
    sample_id: Annotated[
        int | None,
        typer.Argument(metavar="SAMPLE_ID", help="with --set-reference: this sample (default: latest fault-free)"),
    ] = None,
    set_reference: Annotated[
        bool,
        typer.Option("--set-reference", help="make a sample the camera's reference frame for the occlusion check"),
    ] = False,
    history: Annotated[int, typer.Option(help="recent samples summarised", min=1, max=1000)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """A camera's video quality: its latest sample's faults with their reasons and metrics, the faults of its recent
    samples, its reference frame. --set-reference [SAMPLE_ID] makes the latest fault-free sample (or that one) its
    reference (audited)."""
    from collections import Counter

    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console, emit_json, err, errors_to_exit, inventory

    if sample_id is not None and not set_reference:
        err.print("[red]error:[/red] a SAMPLE_ID goes with --set-reference (see vms vqd --help)")
        raise typer.Exit(2)
    with errors_to_exit():
        from vms.frames.store import SampleStore
        from vms.frames.vqd import thresholds_from

        inv = inventory()
        store = SampleStore(inv)
        cid = _resolve(inv, camera)
        reference_set = store.set_reference(cid, sample_id, actor="cli") if set_reference else None
        rows = store.list(camera_id=cid, limit=history)
        cams = _cameras(inv, [cid])
        sets = _set_names(inv, (r.set_id for r in rows))
        reference = store.reference_info(cid)
        thresholds = thresholds_from(inv.settings)
    cam = cams.get(cid, {})
    data: dict[str, Any] = {
        "camera_id": cid,
        "device_id": cam.get("device_id"),
        "name": cam.get("name"),
        "latest": None,
        "history": [],
        "fault_counts": {},
        "reference": reference,
    }
    if reference_set is not None:
        data["reference_set"] = reference_set
    label = escape(_camera_label(cid, cam))
    if reference_set is not None and not as_json:
        console.print(f"camera {label}: reference set to sample {reference_set}")
    if not rows:
        if as_json:
            emit_json(data)
        else:
            console.print(f"camera {label}: no sample yet (`vms sample` takes one)")
        return
    latest = rows[0]
    data["latest"] = {
        **_sample_dict(store, latest, cams, sets),
        "reasons": reasons_of(latest.faults, latest.metrics, thresholds),
    }
    counts = Counter(f for r in rows for f in r.faults)
    data["history"] = [{"id": r.id, "taken_at": r.taken_at, "faults": list(r.faults)} for r in rows]
    data["fault_counts"] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if as_json:
        emit_json(data)
        return
    lat = data["latest"]
    console.print(
        f"camera {label}: latest sample {lat['id']} taken {_when(lat)} UTC ({lat['source']} {lat['width']}x"
        f"{lat['height']} {escape(str(lat['codec'] or '?'))}, latency {_latency(lat['latency_ms'])})"
    )
    if lat["faults"]:
        for fault, why in lat["reasons"].items():
            console.print(f"  [red]{escape(fault)}[/red]: {escape(why)}")
    else:
        console.print("  [green]passes every check")
    if lat["metrics"]:
        console.print("metrics: " + escape(", ".join(f"{k} {_metric(v)}" for k, v in lat["metrics"].items())))
    faulty = sum(1 for r in rows if r.faults)
    console.print(
        f"last {len(rows)} samples: {faulty} with faults"
        + (": " + escape(", ".join(f"{f} {n}" for f, n in data["fault_counts"].items())) if counts else "")
    )
    if len(rows) > 1:
        t = Table("id", "taken (UTC)", "faults", title="recent samples")
        for r in rows:
            t.add_row(str(r.id), f"{r.taken_at:%Y-%m-%d %H:%M:%S}", escape(", ".join(r.faults)) or "-")
        console.print(t)
    if reference is None:
        console.print("reference: none (occlusion is not checked; --set-reference takes the latest fault-free sample)")
    else:
        console.print(
            f"reference: sample {reference['sample_id'] if reference['sample_id'] is not None else '(pruned)'}, "
            f"{reference['width']}x{reference['height']}, set {reference['set_at']:%Y-%m-%d %H:%M:%S} UTC"
        )


# --- vms intact --------------------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def intact_cmd(
    region: Annotated[str | None, typer.Option(help="only this region (with its sub-regions)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The intact rate: registered cameras online whose latest sample has no video-quality fault, overall and by
    region, with the counts (a camera never sampled is not intact)."""
    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.frames.store import intact_rate
        from vms.store import repository as repo

        inv = inventory()
        code = region.strip() if region is not None else None
        if region is not None and not code:
            raise ValueError("--region: give a region code")
        rate = intact_rate(inv, region=code)
        with inv.session(write=False) as s:
            names = repo.region_codes_and_names(s)
    data = {"region": code, **rate.to_dict()}
    for c, counts in data["by_region"].items():
        counts["name"] = names.get(c)
    if as_json:
        emit_json(data)
        return
    where = f" in region {escape(code)}" if code else ""
    if not rate.registered:
        console.print(f"intact rate{where}: - (no registered camera)")
        return
    console.print(
        f"intact rate{where}: {_rate(rate.rate)} ({rate.intact} of {rate.registered} registered cameras intact; "
        f"{rate.online} online, {rate.sampled} sampled)"
    )
    if rate.faults:
        console.print("latest samples with faults: " + escape(", ".join(f"{f} {n}" for f, n in rate.faults.items())))
    if rate.sampled < rate.registered:
        console.print(f"cameras never sampled: {rate.registered - rate.sampled} (`vms sample` samples them)")
    if rate.by_region:
        t = Table("region", "name", "registered", "online", "sampled", "intact", "rate", title="by region")
        for c, counts in data["by_region"].items():
            t.add_row(
                escape(c),
                escape(counts["name"] or ""),
                str(counts["registered"]),
                str(counts["online"]),
                str(counts["sampled"]),
                str(counts["intact"]),
                _rate(counts["rate"]),
            )
        console.print(t)
