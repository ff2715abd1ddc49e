"""The ``vms`` command line. Every command that reports takes ``--json`` for scripts."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from vms.catalog.domain import SourceKind
from vms.cli.coverage import register as register_coverage
from vms.cli.gb28181 import register as register_gb28181
from vms.cli.samples import register as register_samples
from vms.cli.trials import trial_app
from vms.errors import VmsError


class _LazyModule:
    """A module imported on first attribute access, so that importing the CLI does not import it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


# `vms --help` must start fast: SQLAlchemy, pydantic-settings, the inventory, the API, the probes, numpy, shapely,
# pyproj... are imported by the commands that need them (tests/unit/test_cli_imports.py checks it).
if TYPE_CHECKING:
    from vms.health.sweep import SweepRequest
    from vms.settings import Settings as SettingsT
    from vms.store import repository as repo
else:
    repo = _LazyModule("vms.store.repository")

app = typer.Typer(no_args_is_help=True, help="Unified inventory of a district's public video cameras.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
regions_app = typer.Typer(no_args_is_help=True, help="Administrative regions and their polygons.")
cameras_app = typer.Typer(no_args_is_help=True, help="The camera inventory.")
ids_app = typer.Typer(no_args_is_help=True, help="GB/T 28181 device IDs.")
app.add_typer(db_app, name="db")
app.add_typer(regions_app, name="regions")
app.add_typer(cameras_app, name="cameras")
app.add_typer(ids_app, name="ids")
credentials_app = typer.Typer(no_args_is_help=True, help="Camera logins, encrypted at rest, per address range.")
app.add_typer(credentials_app, name="credentials")
apikey_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed; shown once).")
app.add_typer(apikey_app, name="apikey")
schedules_app = typer.Typer(no_args_is_help=True, help="Health sweep schedules (run by `vms scheduler`, `vms run`).")
app.add_typer(schedules_app, name="schedules")
app.add_typer(trial_app, name="trial")  # vms/cli/trials.py
register_samples(app)  # vms/cli/samples.py: `vms samples ...`, `vms vqd`, `vms intact`
register_coverage(app)  # vms/cli/coverage.py: `vms coverage`
register_gb28181(app)  # vms/cli/gb28181.py: `vms gb28181 serve|devices`


def _console(*, stderr: bool = False) -> Console:
    """A terminal gets rich's wrapping to its width; a pipe or file gets every value in full (rich would otherwise
    cut tables at 80 columns, e.g. IDs as `37131100001…`) and one line per message."""
    stream = sys.stderr if stderr else sys.stdout
    if stream is not None and stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=1_000_000, soft_wrap=True)


console = _console()
err = _console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, set | frozenset):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, ensure_ascii=False, indent=2) + "\n")


def load_settings() -> SettingsT:
    """The settings (VMS_* variables, .env); the log level follows them."""
    from vms.settings import Settings

    settings = Settings()
    logging.getLogger().setLevel(settings.log_level.upper())
    return settings


def inventory() -> Any:
    from vms.access.apikeys import cli_address
    from vms.inventory.service import Inventory
    from vms.store.repository import AUDIT_ADDRESS

    AUDIT_ADDRESS.set(cli_address())  # every change this command audits says it came from here
    inv = Inventory(load_settings())
    inv.upgrade()  # cheap when current; a fresh data dir just works
    return inv


@contextmanager
def errors_to_exit() -> Iterator[None]:
    try:
        yield
    except VmsError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}")
        raise typer.Exit(2) from exc
    except (OSError, ValueError, OverflowError, RecursionError) as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}")
        raise typer.Exit(2) from exc


def _one_line(exc: BaseException) -> str:
    """An error message as one line of plain text: file contents echoed in it must not be read as markup."""
    from rich.markup import escape

    return escape(" ".join(str(exc).split()) or type(exc).__name__)


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield lambda _stage, _done, _total: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            # total 0: not known in advance (an import streams its rows): the count so far, no bar to fill
            known = total if total > 0 else None
            label = f"{stage} {done:,}/{total:,}" if known else f"{stage}: {done:,} rows"
            if stage not in tasks:
                tasks[stage] = bar.add_task(label, total=known)
            bar.update(tasks[stage], completed=done, total=known, description=label)

        yield update


# --- db ------------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    from vms.inventory.service import Inventory
    from vms.store.db import current_revision

    inv = Inventory(load_settings())
    inv.upgrade()
    console.print(f"database at revision {current_revision(inv.engine)} ({inv.engine.url.render_as_string()})")


# --- regions -------------------------------------------------------------------------------------------


@regions_app.command("import")
def regions_import(
    path: Path,
    crs: Annotated[
        str,
        typer.Option(
            help="coordinates of the file: auto (a Shapefile's .prj; GCJ-02 if the name says gcj; else WGS-84), "
            "wgs84, gcj02 (Chinese map services) or a system such as EPSG:4549, EPSG:32650, EPSG:2326"
        ),
    ] = "auto",
    code_property: Annotated[
        str | None, typer.Option(help="property (GeoJSON) or DBF field (Shapefile) holding the region code")
    ] = None,
    name_property: Annotated[
        str | None, typer.Option(help="property (GeoJSON) or DBF field (Shapefile) holding the name")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import administrative codes (CSV or a directory of them) or region polygons (GeoJSON, a Shapefile or a
    .zip of Shapefiles)."""
    with errors_to_exit():
        rep = inventory().import_regions(path, crs=crs, code_property=code_property, name_property=name_property)
    if as_json:
        emit_json(rep.__dict__)
        return
    console.print(
        f"regions: {rep.created} new, {rep.updated} updated, {rep.with_geometry} with polygons; "
        f"{rep.cameras_moved} cameras re-placed"
    )
    if rep.generated_codes:
        console.print(
            f"[yellow]{rep.generated_codes} regions have no code in the file[/yellow]: codes were generated from "
            "their names (see `vms regions list`); name the code property with --code-property if there is one"
        )


@regions_app.command("list")
def regions_list(
    as_json: JsonOpt = False,
    level: Annotated[
        str | None, typer.Option(help="only this level: province, city, district, township or other")
    ] = None,
) -> None:
    """Imported regions: code, name, parent code, level and the file they came from."""
    rows = [r for r in inventory().list_regions() if level is None or r["level"] == level]
    if as_json:
        emit_json(rows)
        return
    table = Table("code", "name", "parent", "level", "source")
    for r in rows:
        table.add_row(r["code"], r["name"], r["parent_code"] or "", r["level"], r["source"])
    console.print(table)


# --- import / export -----------------------------------------------------------------------------------


@app.command("import")
def import_(
    path: Path,
    source: Annotated[str | None, typer.Option(help="source name (default: KIND:file-stem)")] = None,
    kind: Annotated[SourceKind | None, typer.Option(help="ledger or catalog (default from format)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, xlsx, json, geojson, xml or osm")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="HEADER=field, repeatable")] = None,
    encoding: Annotated[str | None, typer.Option(help="force the text encoding (default: detect)")] = None,
    crs: Annotated[
        str | None, typer.Option(help="coordinate system of easting/northing columns, e.g. EPSG:2326, EPSG:4549")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would change, change nothing")] = False,
    partial: Annotated[bool, typer.Option("--partial", help="the file is not the source's whole list")] = False,
    allow_removals: Annotated[
        bool,
        typer.Option(
            "--allow-removals",
            help="let this import remove more of the source's cameras than VMS_MAX_REMOVAL_SHARE (default 20%)",
        ),
    ] = False,
    strict: Annotated[bool, typer.Option(help="exit 1 if any row was rejected")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a ledger (CSV, XLSX, JSON, GeoJSON), a GB/T 28181 Catalog XML or OpenStreetMap cameras."""
    column_map: dict[str, str] = {}
    for item in mapping or []:
        header, sep, target = item.partition("=")
        if not sep:
            err.print(f"[red]error:[/red] --map wants HEADER=field, got {item!r}")
            raise typer.Exit(2)
        column_map[header.strip()] = target.strip()
    with errors_to_exit(), progress_bar(not as_json and sys.stderr.isatty()) as bar:
        rep = inventory().import_file(
            path,
            source=source,
            kind=kind,
            fmt=fmt,
            column_map=column_map,
            encoding=encoding,
            crs=crs,
            dry_run=dry_run,
            snapshot=not partial,
            allow_removals=allow_removals,
            progress=bar,
        )
    if as_json:
        emit_json(rep.as_dict())
    else:
        _print_import(rep)
    if strict and rep.rejected:
        raise typer.Exit(1)


def _print_import(rep: Any) -> None:
    from rich.markup import escape  # paths, names and cell values echoed in reasons are text, never markup

    r = rep.result
    head = "[yellow]dry run[/yellow]: would import" if rep.dry_run else "imported"
    console.print(
        f"{head} {escape(rep.path)} as source [bold]{escape(rep.source)}[/bold] ({rep.format}"
        f"{', ' + rep.encoding if rep.encoding else ''}): {rep.rows} rows, {rep.accepted} accepted, "
        f"{rep.rejected} rejected"
    )
    if rep.file_unchanged:
        console.print("file and source unchanged since the source's last import: no row read, its report again")
    console.print(
        f"cameras: {r.cameras_created} new, {r.cameras_updated} updated, {r.cameras_removed} removed, "
        f"{r.cameras_restored} restored; records: {r.observations_new} new, {r.observations_changed} changed, "
        f"{r.observations_unchanged} unchanged, {r.observations_removed} gone"
        + (f"; {rep.nodes} catalog nodes" if rep.nodes else "")
    )
    if rep.logins_stored:
        console.print(f"logins: {rep.logins_stored:,} moved to the encrypted credential store (per IP address)")
    if rep.issues:
        counts = rep.issue_counts or {(i.code, i.fatal): 1 for i in rep.issues}
        console.print(
            "row issues: "
            + ", ".join(
                f"{escape(code)} {n:,}" + (" (rejected)" if fatal else "")
                for (code, fatal), n in sorted(counts.items())
            )
        )
        # Rejected rows first: they are what the operator must fix; notes about repaired values come after.
        ordered = sorted(rep.issues, key=lambda i: (not i.fatal, i.line))
        table = Table("line", "code", "reason", title=f"{rep.issues_total:,} row issues")
        for i in ordered[:200]:
            table.add_row(str(i.line), ("[red]" if i.fatal else "[yellow]") + escape(i.code), escape(i.reason))
        console.print(table)
        if rep.issues_total > 200:
            console.print(
                f"... {rep.issues_total - 200:,} more"
                + (
                    " (use --json for all)"
                    if rep.issues_total == len(rep.issues)
                    else f" (--json lists the first {len(rep.issues):,}, every one is counted above)"
                )
            )
    for c in r.identity_conflicts[:20]:
        console.print(f"[yellow]identity conflict[/yellow] {escape(c)}")


@app.command("export")
def export(
    path: Path,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, geojson or xml (default from suffix)")] = None,
    region: Annotated[str | None, typer.Option(help="only this region (and its sub-regions)")] = None,
    status: str | None = None,
    source: str | None = None,
) -> None:
    """Export the inventory as CSV, GeoJSON or GB/T 28181 Catalog XML."""
    with errors_to_exit():
        n = inventory().export(path, fmt=fmt, flt=repo.CameraFilter(region=region, status=status, source=source))
    console.print(f"exported {n} cameras to {path}")


# --- quality / stats -----------------------------------------------------------------------------------


@app.command("quality")
def quality(
    as_json: JsonOpt = False,
    cameras: Annotated[bool, typer.Option("--cameras", help="list every failing camera")] = False,
) -> None:
    """Data-quality report: pass rate overall, by rule, region and source (target 95 %)."""
    report, names = inventory().quality(cameras=cameras)
    data = report.as_dict(region_names=names, include_cameras=cameras)
    if as_json:
        emit_json(data)
        return
    colour = "green" if data["meets_target"] else "red"
    console.print(
        f"data quality: [{colour}]{data['pass_rate']:.1%}[/{colour}] of {data['total']} cameras pass "
        f"(target {data['target']:.0%}); {data['cameras_with_source_conflicts']} with source conflicts"
    )
    t = Table("code", "rule", "cameras", "description", title="problems")
    for r in data["by_rule"]:
        t.add_row(r["code"], str(r["rule"]), str(r["cameras"]), r["description"])
    console.print(t)
    t = Table("region", "name", "cameras", "pass rate", title="by region")
    for r in data["by_region"]:
        t.add_row(r["region"] or "(none)", r["name"] or "", str(r["total"]), f"{r['pass_rate']:.1%}")
    console.print(t)
    t = Table("source", "cameras", "pass rate", title="by source")
    for r in data["by_source"]:
        t.add_row(r["source"], str(r["total"]), f"{r['pass_rate']:.1%}")
    console.print(t)
    if cameras:
        for c in data["cameras"]:
            console.print(f"{c['id']}: {', '.join(c['problems'])}")


@app.command("stats")
def stats(
    by: Annotated[str, typer.Option(help="region, status, source or manufacturer")] = "region",
    as_json: JsonOpt = False,
) -> None:
    """Camera counts grouped by region, status, source or manufacturer."""
    with errors_to_exit():
        rows = inventory().stats(by)
    data = [{by: r.key, "name": r.name, "count": r.count, **r.extra} for r in rows]
    if as_json:
        emit_json(data)
        return
    t = Table(by, "name", "cameras")
    for r in rows:
        t.add_row(r.key or "(none)", r.name or "", str(r.count))
    if by == "source":
        # A camera that several sources list counts once under each: the column does not add up to the cameras.
        distinct, _ = inventory().list_cameras(repo.CameraFilter(), limit=0)
        t.add_row("[bold]cameras (distinct)", "", f"[bold]{distinct}")
        t.caption = (
            f"a camera counts once for each source that lists it: {sum(r.count for r in rows)} listings "
            f"of {distinct} distinct cameras"
        )
    else:
        t.add_row("[bold]total", "", f"[bold]{sum(r.count for r in rows)}")
    console.print(t)


# --- cameras -------------------------------------------------------------------------------------------


@cameras_app.command("list")
def cameras_list(
    region: str | None = None,
    status: str | None = None,
    source: str | None = None,
    search: Annotated[
        str | None, typer.Option(help="name, GB ID, department number, address, IP or MAC contains (literal)")
    ] = None,
    removed: Annotated[bool, typer.Option(help="include cameras their sources removed")] = False,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """The inventory, a page at a time (--limit, --offset), filtered by region, status, source or text."""
    flt = repo.CameraFilter(region=region, status=status, source=source, search=search, include_removed=removed)
    total, rows = inventory().list_cameras(flt, limit=limit, offset=offset)
    if as_json:
        emit_json({"total": total, "limit": limit, "offset": offset, "items": rows})
        return
    t = Table("id", "device_id", "dept no", "name", "region", "status", "lon", "lat", title=f"{total} cameras")
    for r in rows:
        t.add_row(
            str(r["id"]),
            r["device_id"] or "",
            r["local_id"] or "",
            r["name"] or "",
            r["region_code"] or "",
            r["status"] or "",
            f"{r['longitude']:.6f}" if r["longitude"] is not None else "",
            f"{r['latitude']:.6f}" if r["latitude"] is not None else "",
        )
    console.print(t)
    if len(rows) < total:
        console.print(f"{len(rows)} of {total}{f' from offset {offset}' if offset else ''}; --limit/--offset for more")


@cameras_app.command("show")
def cameras_show(ref: str, as_json: JsonOpt = False) -> None:
    """One camera: its record, where each field came from, and what other sources say."""
    inv = inventory()
    with errors_to_exit():
        data = inv.show_camera(ref)
        data["problems"] = inv.camera_problems(data["id"])
    if as_json:
        emit_json(data)
        return
    t = Table("field", "value", "source", "other sources say", title=f"camera {data['id']}")
    for name, value in data["record"].items():
        if value is None:
            continue
        p = data["provenance"].get(name, {})
        conflicts = p.get("conflicts") or {}
        others = ", ".join(f"{s}: {v}" for s, v in conflicts.items() if s != p.get("source"))
        t.add_row(name, str(value), p.get("source", ""), f"[yellow]{others}" if others else "")
    console.print(t)
    console.print(
        f"region {data['region_code']} {data['region_name'] or ''} (position: "
        f"{data['region_by_position']}, civil code: {data['region_by_code']})"
    )
    for s in data["sources"]:
        state = f"removed {s['removed_at']}" if s["removed_at"] else f"seen {s['seen_at']}"
        console.print(f"source {s['source']} ({s['kind']}) key {s['key']} line {s['line']}: {state}")
    if data["removed_at"]:
        console.print(f"[yellow]removed by its sources at {data['removed_at']}")
    console.print("quality: " + (", ".join(data["problems"]) or "[green]passes every rule"))


@cameras_app.command("edit")
def cameras_edit(ref: str, assignments: list[str]) -> None:
    """Correct fields (FIELD=VALUE ...); kept as the 'api' source, which outranks the others by default."""
    changes: dict[str, Any] = {}
    for a in assignments:
        k, sep, v = a.partition("=")
        if not sep:
            err.print(f"[red]error:[/red] want FIELD=VALUE, got {a!r}")
            raise typer.Exit(2)
        changes[k.strip()] = v
    with errors_to_exit():
        inventory().edit_camera(ref, changes, actor="cli")
    console.print(f"camera {ref} updated")


@cameras_app.command("tag")
def cameras_tag(
    ref: str,
    tags: Annotated[list[str], typer.Argument(help="labels, e.g. school ring-road")],
    remove: Annotated[bool, typer.Option("--remove", help="take these tags off")] = False,
) -> None:
    """Label a camera (for sweep groups: vms sweep --tag, schedules); --remove takes labels off."""
    with errors_to_exit():
        after = inventory().tag_camera(ref, tags, remove=remove, actor="cli")
    console.print(f"camera {ref} tags: {', '.join(after) or '(none)'}")


# --- ids -----------------------------------------------------------------------------------------------


@ids_app.command("explain")
def ids_explain(device_id: str, as_json: JsonOpt = False) -> None:
    """What a GB/T 28181 ID says: region, industry, type, network, serial."""
    from vms.catalog.gbid import GbIdError, check_gb_id, explain_gb_id

    inv = inventory()
    with inv.session(write=False) as s:
        names = repo.region_codes_and_names(s)
    try:
        data: dict[str, Any] = dict(explain_gb_id(device_id, region_names=names))
    except GbIdError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    data["problems"] = check_gb_id(
        device_id,
        governed=inv.settings.governed_region or None,
        known_civil_codes={c for c in names if c.isdigit()} or None,
    )
    if as_json:
        emit_json(data)
        return
    for k, v in data.items():
        console.print(f"{k:>12}: {v}")


@ids_app.command("allocate")
def ids_allocate(
    centre: Annotated[
        str | None, typer.Option(help="8-digit centre code for every camera (default: each camera's own)")
    ] = None,
    civil_code: Annotated[
        str | None,
        typer.Option(help="6- or 8-digit code for cameras with no civil code and no position in a known region"),
    ] = None,
    industry: str = "00",
    type_code: Annotated[str, typer.Option("--type")] = "132",
    network: str = "6",
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Allocate GB/T 28181 IDs to cameras that have none, from each camera's civil code or the region its position
    lies in. Cameras with neither are skipped and listed, unless --civil-code says which code they get."""
    with errors_to_exit():
        result = inventory().allocate_ids(
            centre=centre,
            civil_code=civil_code,
            industry=industry,
            type_code=type_code,
            network=network,
            dry_run=dry_run,
        )
    if as_json:
        emit_json(result.as_dict())
        return
    pairs, skipped = result.allocated, result.skipped
    console.print(f"{'would allocate' if dry_run else 'allocated'} {len(pairs)} IDs")
    for cid, gid in pairs[:50]:
        console.print(f"camera {cid}: {gid}")
    if len(pairs) > 50:
        console.print(f"... {len(pairs) - 50} more (--json lists all)")
    if skipped:
        console.print(
            f"[yellow]skipped {len(skipped)} cameras[/yellow]: no civil code, and no position in a region that has "
            "one (an ID names a region: give --civil-code CODE for them, or import their region's boundary):"
        )
        for c in skipped[:20]:
            label = " ".join(str(v) for v in (c["local_id"], c["name"]) if v)
            console.print(f"camera {c['id']} {label}: {c['reason']}")
        if len(skipped) > 20:
            console.print(f"... {len(skipped) - 20} more (--json lists all)")


@credentials_app.command("add")
def credentials_add(
    name: str,
    username: Annotated[str, typer.Option(help="camera account")],
    scope: Annotated[str | None, typer.Option(help="address range (CIDR) the set applies to")] = None,
    default: Annotated[bool, typer.Option("--default", help="try this set where no range matches")] = False,
    password_env: Annotated[str | None, typer.Option(help="read the password from this environment variable")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="overwrite a set of the same name")] = False,
) -> None:
    """Add a credential set. The password is prompted for (or read from --password-env), never an argument."""
    import os

    from vms.inventory.credentials import Cipher, add_credential

    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            err.print(f"[red]error:[/red] environment variable {password_env} is not set")
            raise typer.Exit(2)
    else:
        password = typer.prompt("password", hide_input=True)
    inv = inventory()
    with errors_to_exit(), inv.session() as s:
        add_credential(
            s,
            Cipher(inv.settings.fernet_key()),
            name=name,
            username=username,
            password=password,
            scope=scope,
            default=default,
            actor="cli",
            replace=replace,
        )
    console.print(f"credential set {name} stored (encrypted)")


@credentials_app.command("list")
def credentials_list(as_json: JsonOpt = False) -> None:
    """Credential sets (never their passwords)."""
    from vms.inventory.credentials import list_credentials

    inv = inventory()
    with inv.session(write=False) as s:
        rows = [
            {"id": c.id, "name": c.name, "username": c.username, "scope": c.scope, "default": c.is_default}
            for c in list_credentials(s)
        ]
    if as_json:
        emit_json(rows)
        return
    t = Table("name", "username", "scope", "default")
    for r in rows:
        t.add_row(str(r["name"]), str(r["username"]), str(r["scope"] or ""), "yes" if r["default"] else "")
    console.print(t)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="who holds it (shown in the audit log as apikey:NAME)")],
    scope: Annotated[
        str | None,
        typer.Option(help="read (lists, feeds), operate (also edits and operations) or admin (also the audit log)"),
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="the former name of --scope (write means operate)", hidden=True)
    ] = None,
) -> None:
    """Create an API key with a scope (read < operate < admin); it is printed once and stored only as a hash."""
    from vms.access.apikeys import cli_address, create_key
    from vms.errors import ValidationFailed

    with errors_to_exit():
        if scope is not None and role is not None:
            raise ValidationFailed("give --scope (or its former name --role), not both")
        key = create_key(inventory(), name, scope or role or "read", actor="cli", address=cli_address())
    sys.stdout.write(key + "\n")


@apikey_app.command("revoke")
def apikey_revoke(name: Annotated[str, typer.Argument(help="the name given at `vms apikey create`")]) -> None:
    """Revoke an API key at once: requests with it get 401 from now on. The record stays, for the audit."""
    from vms.access.apikeys import cli_address, revoke_key

    with errors_to_exit():
        revoke_key(inventory(), name, actor="cli", address=cli_address())
    console.print(f"revoked {name}")


@apikey_app.command("list")
def apikey_list(as_json: JsonOpt = False) -> None:
    """API keys: name, scope, created, last used (to the minute), revoked. Never the key or its hash."""
    from vms.access.apikeys import list_keys

    rows = list_keys(inventory())
    if as_json:
        emit_json(rows)
        return

    def when(at: datetime | None) -> str:
        return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else ""

    t = Table("name", "scope", "created", "last used", "revoked", title=f"{len(rows)} API keys")
    for r in rows:
        t.add_row(
            r["name"], r["scope"], when(r["created_at"]), when(r["last_used_at"]) or "never", when(r["revoked_at"])
        )
    console.print(t)


# --- audit / serve -------------------------------------------------------------------------------------


@app.command("audit")
def audit(limit: int = 50, as_json: JsonOpt = False) -> None:
    """The newest entries of the audit log: who, what, when and from where (the client's address) for every write."""
    inv = inventory()
    with inv.session(write=False) as s:
        rows = [
            {
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "details": e.details,
                "address": e.address,
            }
            for e in repo.audit_entries(s, limit)
        ]
    if as_json:
        emit_json(rows)
        return
    t = Table("at", "actor", "action", "target", "from")
    for r in rows:
        t.add_row(str(r["at"]), str(r["actor"]), str(r["action"]), str(r["target"] or ""), str(r["address"] or ""))
    console.print(t)


def default_workers() -> int:
    """One API worker process per CPU this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="default VMS_API_HOST (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="default VMS_API_PORT (8000)", min=0, max=65535)] = None,
    workers: Annotated[
        int | None, typer.Option(help="API worker processes (default: one per CPU)", min=1, max=256)
    ] = None,
) -> None:
    """Run the HTTP API and the dashboard in several worker processes (no scheduler: `vms run` has it)."""
    import uvicorn

    with errors_to_exit():
        inv = inventory()  # migrates once, before the workers start
        settings = inv.settings
        inv.engine.dispose()
    bind = host or settings.api_host
    n = workers or default_workers()
    # The workers build the app from the same settings (api.app:app_from_environment); where they listen is passed
    # through the environment they inherit.
    os.environ["VMS_API_HOST"] = bind
    console.print(f"vms: API and dashboard on http://{bind}:{port or settings.api_port}/, {n} worker processes")
    uvicorn.run(
        "api.app:app_from_environment",
        factory=True,
        host=bind,
        port=port or settings.api_port,
        workers=n,
        log_level=settings.log_level.lower(),
    )


@app.command("remerge")
def remerge_cmd() -> None:
    """Recompute every camera record from its sources (after VMS_SOURCE_PRIORITY changes)."""
    n = inventory().remerge_all()
    console.print(f"{n} camera records changed")


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "(unreadable URL)"


@app.command("worker")
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="shards run at once, one pool process each (default: one per CPU)", min=1,
                                 max=256)
    ] = None,
    name: Annotated[str | None, typer.Option(help="worker name, e.g. w1@%h (default celery@HOST)")] = None,
) -> None:
    """Run one Celery worker for sweeps with VMS_EXECUTOR=celery: it takes shards of cameras from
    VMS_CELERY_BROKER (Redis), checks them and records the results in the same database."""
    with errors_to_exit():
        inv = inventory()  # migrates once, before the pool processes start
        settings = inv.settings
        database = inv.engine.url.render_as_string()
        inv.engine.dispose()
    try:
        from vms.jobs.celery_app import celery_app, worker_argv
    except ImportError as exc:
        err.print(f"[red]error:[/red] the celery executor is not installed ({_one_line(exc)}): "
                  "pip install 'vms[celery]'")
        raise typer.Exit(2) from None
    n = concurrency or default_workers()
    console.print(f"vms: worker on {_without_password(settings.celery_broker)}, {n} processes, database {database}")
    celery_app(settings).worker_main(worker_argv(n, name=name, loglevel=settings.log_level))


@app.command("discover")
def discover(
    ranges: Annotated[list[str] | None, typer.Option("--range", help="CIDR to scan (repeatable)")] = None,
    ports: Annotated[list[int] | None, typer.Option("--port", help="ports to try (default 80 8080 8000 8899)")] = None,
    interfaces: Annotated[
        list[str] | None, typer.Option("--interface", help="IPv4 address of an interface for multicast probes")
    ] = None,
    unicast: Annotated[
        list[str] | None, typer.Option("--unicast", help="host for a directed WS-Discovery probe")
    ] = None,
    targets: Annotated[list[str] | None, typer.Option("--target", help="device service (host[:port] or URL)")] = None,
    timeout: Annotated[float, typer.Option(help="per-call timeout, seconds")] = 3.0,
    concurrency: Annotated[int, typer.Option(help="devices interrogated at once")] = 200,
    device_budget: Annotated[
        float, typer.Option(help="seconds one device's interrogation may take; a device that hangs is left after it")
    ] = 20.0,
    workers: Annotated[
        int, typer.Option(help="processes sharing a range scan (0: one per core for ranges of 4,000+ addresses)")
    ] = 0,
    force: Annotated[bool, typer.Option("--force", help="scan ranges of more than 65,536 addresses")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find ONVIF cameras (WS-Discovery, range scan), interrogate them and register them in the inventory.

    Devices may point the prober only at themselves and at allowed networks (the ranges, credential scopes,
    VMS_ALLOWED_NETWORKS); anything else is refused with the cause address_refused."""
    import asyncio

    from vms.discovery.service import DEFAULT_PORTS, Discovery, DiscoveryRequest

    if not (ranges or interfaces or unicast or targets):
        err.print("[red]error:[/red] give at least one --range, --interface, --unicast or --target")
        raise typer.Exit(2)
    req = DiscoveryRequest(
        ranges=ranges or [],
        ports=ports or list(DEFAULT_PORTS),
        interfaces=interfaces or [],
        unicast=unicast or [],
        targets=targets or [],
        call_timeout=timeout,
        concurrency=concurrency,
        device_deadline=device_budget,
        workers=workers,
        force=force,
    )
    try:
        req.validate()  # bad input: one line, exit 2, no run recorded
    except ValueError as exc:
        hint = " (--force)" if "force it" in str(exc) else ""
        err.print(f"[red]error:[/red] {exc}{hint}", soft_wrap=True)  # one line, whatever the width
        raise typer.Exit(2) from None
    inv = inventory()
    with errors_to_exit(), progress_bar(not as_json and sys.stderr.isatty()) as bar:
        outcome = asyncio.run(Discovery(inv).run(req, bar))
    if as_json:
        emit_json(outcome.as_dict())
        return
    console.print(
        f"discovery run {outcome.run_id}: {outcome.found} devices found, {outcome.answered} answered, "
        f"{outcome.registered} registered ({outcome.new} new, {outcome.updated} updated, {outcome.unchanged} "
        f"unchanged), {outcome.failed} failed"
    )
    if outcome.step_failures:
        console.print("steps that failed on registered devices: " + _step_summary(outcome.step_failures))
    if outcome.failures:
        t = Table("host", "port", "cause", "step", "detail", title="failures")
        for f in outcome.failures[:200]:
            port = "" if f["port"] is None else str(f["port"])
            t.add_row(f["host"], port, f["cause"], str(f["step"] or ""), str(f["detail"])[:80])
        console.print(t)


def _step_summary(step_failures: dict[str, dict[str, int]]) -> str:
    """'GetProfiles timeout 2, GetServices address_refused 1' from {step: {cause: count}}."""
    return ", ".join(
        f"{step} {cause} {n}" for step, causes in sorted(step_failures.items()) for cause, n in sorted(causes.items())
    )


@app.command("discoveries")
def discoveries(limit: int = 10, as_json: JsonOpt = False) -> None:
    """Past discovery runs: found, answered, new, updated, unchanged, failed with causes, and the optional steps
    that failed on registered devices (by step and cause)."""
    from vms.discovery.service import discovery_runs

    runs = discovery_runs(inventory(), limit)
    if as_json:
        emit_json(runs)
        return
    t = Table(
        "run", "started", "found", "answered", "new", "updated", "unchanged", "failed", "causes", "failed steps"
    )
    for r in runs:
        c = r["counts"] or {}
        t.add_row(
            str(r["id"]),
            str(r["started_at"]),
            *(str(c.get(k, "")) for k in ("found", "answered", "new", "updated", "unchanged", "failed")),
            ", ".join(f"{k} {v}" for k, v in (c.get("by_cause") or {}).items()),
            _step_summary(c.get("step_failures") or {}),
        )
    console.print(t)


# --- health ---------------------------------------------------------------------------------------------


def _split_stages(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(s.strip() for v in values for s in v.split(",") if s.strip())


@app.command("sweep")
def sweep_cmd(
    stages: Annotated[
        list[str] | None,
        typer.Option("--stages", help="stages to run, comma-separated or repeated (default tcp,onvif,login,stream; "
                     "also rtsp, snapshot, frame)"),
    ] = None,
    region: Annotated[str | None, typer.Option(help="only the cameras of this region (and its sub-regions)")] = None,
    source: Annotated[str | None, typer.Option(help="only the cameras this source lists")] = None,
    tag: Annotated[str | None, typer.Option(help="only the cameras with this tag (vms cameras tag)")] = None,
    deadline: Annotated[
        float | None, typer.Option(help="seconds the sweep may take; cameras not finished then count as deadline")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="cameras checked at once")] = 200,
    per_host: Annotated[int, typer.Option(help="cameras of one device checked at once")] = 2,
    processes: Annotated[
        int,
        typer.Option(help="local executor: worker processes (0: one per core for 2,000+ cameras; 1: this process)"),
    ] = 0,
    executor: Annotated[
        str | None, typer.Option(help="local (this process) or celery (vms worker processes); default VMS_EXECUTOR")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the cameras now (TCP, ONVIF clock, login, stream URI; RTSP, snapshot and a sampled frame's video
    quality on request), record results, statuses and events, and print a summary by outcome, stage and cause."""
    from probes.health.check import ONVIF_STAGES
    from vms.health.sweep import Group, SweepRequest

    chosen = [(k, v) for k, v in (("region", region), ("source", source), ("tag", tag)) if v is not None]
    if len(chosen) > 1:
        err.print("[red]error:[/red] give at most one of --region, --source, --tag")
        raise typer.Exit(2)
    try:
        group = Group(chosen[0][0], chosen[0][1]) if chosen else Group()  # type: ignore[arg-type]
        req = SweepRequest(
            stages=_split_stages(stages) or ONVIF_STAGES,
            group=group,
            deadline_s=deadline,
            concurrency=concurrency,
            per_host=per_host,
            processes=processes,
        )
        req.validate()  # bad input: one line, exit 2, no sweep recorded
    except ValueError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}")
        raise typer.Exit(2) from None
    summary = _run_sweep(req, executor, as_json)
    if as_json:
        emit_json(summary)
        return
    outcomes = summary["outcome"]
    by_outcome = ", ".join(f"{outcomes.get(o, 0)} {o}" for o in ("ok", "defect", "off", "deadline"))
    console.print(
        f"sweep {summary['sweep_id']} ({summary['group']}; {','.join(summary['stages'])}): "
        f"{summary['planned']} cameras, {summary['checked']} checked ({by_outcome}), "
        f"{summary['not_checkable']} not checkable (no ONVIF address); {summary['status_changed']} statuses "
        f"changed; {summary['duration_s']:.1f} s"
    )
    if summary["cause"]:
        t = Table("stage", "cause", "cameras", title="failures")
        for stage, causes in summary["cause"].items():
            for cause, n in causes.items():
                t.add_row(stage, cause, str(n))
        console.print(t)


def _run_sweep(req: SweepRequest, executor: str | None, as_json: bool) -> dict[str, Any]:
    """Run a validated sweep on the chosen executor, a progress bar on a terminal (not with --json); its summary."""
    from vms.health.sweep import run_sweep

    inv = inventory()
    mode = _executor(inv, executor)
    with errors_to_exit(), progress_bar(not as_json and sys.stderr.isatty()) as bar:
        return run_sweep(inv, req, executor=mode, progress=bar)


def _executor(inv: Any, executor: str | None) -> str:
    """The sweep executor: the option's, else VMS_EXECUTOR; the celery one loaded (exit 2 when it cannot be)."""
    mode = str(executor or getattr(inv.settings, "executor", "local"))
    if mode == "celery":  # the celery executor (vms worker processes run the shards) registers on import
        import importlib

        try:
            importlib.import_module("vms.jobs.celery_app")
        except ImportError as exc:
            err.print(f"[red]error:[/red] the celery executor is not available: {_one_line(exc)}")
            raise typer.Exit(2) from None
    return mode


@app.command("sample")
def sample_cmd(
    region: Annotated[str | None, typer.Option(help="only the cameras of this region (and its sub-regions)")] = None,
    group: Annotated[
        str | None, typer.Option(help="the cameras of a group: all, region:CODE, source:NAME or tag:TAG")
    ] = None,
    set_name: Annotated[
        str | None, typer.Option("--set", help="the sample set the samples join (created, or reused by name)")
    ] = None,
    frames: Annotated[int, typer.Option(help="pictures per camera (keyframes at least --spacing apart)")] = 1,
    spacing: Annotated[float, typer.Option(help="seconds between a camera's pictures")] = 0.0,
    source: Annotated[str, typer.Option(help="rtsp (the stream) or snapshot (the snapshot URI)")] = "rtsp",
    deadline: Annotated[
        float | None, typer.Option(help="seconds the run may take; cameras not finished then count as deadline")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="cameras sampled at once")] = 64,
    per_host: Annotated[int, typer.Option(help="stream sessions per camera host at once")] = 2,
    executor: Annotated[
        str | None, typer.Option(help="local (this process) or celery (vms worker processes); default VMS_EXECUTOR")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample a frame from each camera (RTSP, or the snapshot URI), judge its video quality, keep it (JPEG and
    metadata), and update statuses and events as a health sweep of the frame stage does; print a summary by
    cause. Cameras without a stream or snapshot URI are not checkable."""
    from vms.health.sweep import Group, SweepRequest

    if region is not None and group is not None:
        err.print("[red]error:[/red] give at most one of --region, --group")
        raise typer.Exit(2)
    try:
        chosen = Group("region", region) if region is not None else Group.parse(group) if group else Group()
        req = SweepRequest(
            stages=("frame",), group=chosen, deadline_s=deadline, concurrency=concurrency, per_host=per_host,
            sample_set=set_name, frames=frames, spacing_s=spacing, source=source.strip().lower(),
        )
        req.validate()  # bad input: one line, exit 2, nothing recorded
    except ValueError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}")
        raise typer.Exit(2) from None
    summary = _run_sweep(req, executor, as_json)
    summary["sample_set"] = set_name
    if as_json:
        emit_json(summary)
        return
    outcomes = summary["outcome"]
    failed = {c: n for c, n in summary["cause"].get("frame", {}).items() if c != "deadline"}
    console.print(
        f"sample run {summary['sweep_id']} ({summary['group']}"
        + (f"; set {set_name}" if set_name else "")
        + f"): {summary['planned']} cameras, {outcomes.get('ok', 0)} with a good picture, "
        f"{sum(failed.values())} failed, {outcomes.get('deadline', 0)} deadline, {summary['not_checkable']} not "
        f"checkable (no stream or snapshot URI); {summary['status_changed']} statuses changed; "
        f"{summary['duration_s']:.1f} s"
    )
    if failed:
        t = Table("cause", "cameras", title="by cause")
        for cause, n in sorted(failed.items(), key=lambda kv: (-kv[1], kv[0])):
            t.add_row(cause, str(n))
        console.print(t)


def _since(text: str) -> datetime:
    """'90s', '15m', '1h', '7d' ago, or an ISO date/time (UTC unless it says otherwise)."""
    import re
    from datetime import UTC, timedelta

    value = text.strip()
    m = re.fullmatch(r"(\d{1,7})\s*([smhd])", value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {text[:40]!r}: want a duration (30m, 1h, 7d) or an ISO time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _event_row(e: dict[str, Any]) -> list[str]:
    return [
        e["at"].isoformat(timespec="seconds"),
        str(e["camera_id"]),
        str(e["event"]),
        f"{e['previous'] or 'unknown'} -> {e['status']}",
        str(e["stage"] or ""),
        str(e["cause"] or ""),
    ]


@app.command("health")
def health_cmd(
    camera: Annotated[str, typer.Argument(help="id, GB device ID, department number or MAC")],
    as_json: JsonOpt = False,
) -> None:
    """One camera's health: status, the latest result per stage (latency, cause), recent events, online rate over
    1, 7 and 30 days, clock drift."""
    from datetime import UTC, timedelta

    from vms.health.service import Health

    inv = inventory()
    with errors_to_exit():
        with inv.session(write=False) as s:
            cid = inv.resolve_camera(s, camera)
        health = Health(inv)
        latest = health.latest(cid)
        events = health.events(camera_id=cid, limit=10)
        now = datetime.now(UTC)
        rates = {
            f"{days}d": health.online_rate(now - timedelta(days=days), now, camera_id=cid, now=now)
            for days in (1, 7, 30)
        }
        drift = health.drift(cid, (now - timedelta(days=30)).date())
    stages = [
        {"stage": st[0], "ok": bool(st[1]), "ms": st[2], "cause": st[3], "detail": st[4]}
        for st in (latest or {}).get("stages", [])
    ]
    data = {
        "camera_id": cid,
        "status": latest["status"] if latest else None,
        "since": latest["since"] if latest else None,
        "checked_at": latest["at"] if latest else None,
        "outcome": latest["outcome"] if latest else None,
        "stages": stages,
        "details": latest["details"] if latest else {},
        "events": events,
        "online_rate": {k: r.rate for k, r in rates.items()},
        "clock_offset_s": latest["clock_offset_s"] if latest else None,
        "drift_per_day_s": health.drift_rate(drift),
        "drift": [{"day": d.day, "min_s": d.min_s, "max_s": d.max_s, "mean_s": d.mean_s} for d in drift],
    }
    if as_json:
        emit_json(data)
        return
    if latest is None:
        console.print(f"camera {cid}: never checked (vms sweep checks it)")
        return
    console.print(
        f"camera {cid}: {data['status'] or 'unknown'} since {data['since'] or '?'}; last check {data['checked_at']}"
        f" ({data['outcome']})"
    )
    t = Table("stage", "result", "ms", "cause", "detail", title="latest check")
    for st in stages:
        t.add_row(st["stage"], "ok" if st["ok"] else "[red]failed", f"{st['ms']:.0f}", st["cause"] or "",
                  str(st["detail"])[:80])
    console.print(t)
    found = {k: v for k, v in data["details"].items() if k not in ("stream_uri_changed", "snapshot_expect")}
    if found:
        console.print("found: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    console.print(
        "online rate: "
        + ", ".join(f"{k} {'-' if v is None else f'{100 * v:.1f}%'}" for k, v in data["online_rate"].items())
    )
    offset = data["clock_offset_s"]
    rate = data["drift_per_day_s"]
    console.print(
        "clock: "
        + ("not read" if offset is None else f"{offset:+.1f} s against ours")
        + ("" if rate is None else f", drifting {rate:+.2f} s/day")
    )
    if events:
        et = Table("at", "camera", "event", "status", "stage", "cause", title="recent events")
        for e in events:
            et.add_row(*_event_row(e))
        console.print(et)


@app.command("events")
def events_cmd(
    since: Annotated[str | None, typer.Option(help="30m, 1h, 7d ago or an ISO time")] = None,
    camera: Annotated[str | None, typer.Option(help="one camera (id, GB ID, department number or MAC)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Status changes (ON, OFF, VLOST, DEFECT), newest first."""
    try:
        start = _since(since) if since is not None else None
    except ValueError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}")
        raise typer.Exit(2) from None
    from vms.health.service import Health

    inv = inventory()
    with errors_to_exit():
        cid = None
        if camera is not None:
            with inv.session(write=False) as s:
                cid = inv.resolve_camera(s, camera)
        rows = Health(inv).events(camera_id=cid, since=start, limit=limit)
    if as_json:
        emit_json(rows)
        return
    t = Table("at", "camera", "event", "status", "stage", "cause", title=f"{len(rows)} events")
    for e in rows:
        t.add_row(*_event_row(e))
    console.print(t)


# --- schedules -------------------------------------------------------------------------------------------


@schedules_app.command("list")
def schedules_list(as_json: JsonOpt = False) -> None:
    """The sweep schedules in force: group, stages, interval or cron, deadline, last run and next run. With none
    configured, the built-in default (ONVIF stages of every camera every VMS_HEALTH_DEFAULT_SCHEDULE_S seconds)."""
    from vms.jobs.schedules import list_schedules

    with errors_to_exit():
        rows = list_schedules(inventory())
    if as_json:
        emit_json(rows)
        return

    def when(at: datetime | None) -> str:
        return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else ""

    t = Table("name", "group", "stages", "when", "deadline", "enabled", "last run", "next run", title="schedules")
    for r in rows:
        last = r["last_run"]
        last_text = ""
        if last is not None:
            last_text = f"{when(last['at'])} sweep {last['sweep_id'] or '-'}"
            if last["error"]:
                last_text += f" failed: {last['error'][:60]}"
            elif last["finished_at"] is None:
                last_text += " (running)"
        every = f"every {r['interval_s']} s" if r["interval_s"] is not None else f"cron {r['cron']}"
        t.add_row(
            r["name"] + (" (built-in: none configured)" if r["builtin"] else ""),
            r["group"],
            ",".join(r["stages"]),
            every,
            f"{r['deadline_s']:g} s" if r["deadline_s"] is not None else "until next run",
            "yes" if r["enabled"] else "no",
            last_text,
            when(r["next_run"]),
        )
    console.print(t)


@schedules_app.command("add")
def schedules_add(
    name: Annotated[str, typer.Argument(help="a name for it, e.g. onvif-5min")],
    every: Annotated[float | None, typer.Option("--every", help="run every N seconds")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="or on a crontab expression (UTC), e.g. '0 * * * *'")]
    = None,
    group: Annotated[str, typer.Option("--group", help="all, region:CODE, source:NAME or tag:TAG")] = "all",
    stages: Annotated[
        list[str] | None, typer.Option("--stages", help="stages to run (default tcp,onvif,login,stream)")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option("--deadline", help="sweep deadline in seconds (default: until the next run)")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="store it without running it")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="change the schedule of that name")] = False,
) -> None:
    """Add a sweep schedule (audited). Running schedulers pick it up within a minute."""
    from vms.jobs.schedules import add_schedule, make_schedule

    with errors_to_exit():
        sched = make_schedule(
            name,
            group=group,
            stages=[p.strip() for v in stages or () for p in v.split(",") if p.strip()] or None,
            interval_s=every,
            cron=cron,
            deadline_s=deadline,
            enabled=not disabled,
        )
        sched = add_schedule(inventory(), sched, actor="cli", replace=replace)
    console.print(f"schedule {sched.name}: {sched.every}, {','.join(sched.stages)} of {sched.group}")


@schedules_app.command("remove")
def schedules_remove(name: str) -> None:
    """Remove a sweep schedule (audited); running schedulers drop it within a minute."""
    from vms.jobs.schedules import remove_schedule

    with errors_to_exit():
        remove_schedule(inventory(), name, actor="cli")
    console.print(f"removed schedule {name}")


@app.command("scheduler")
def scheduler_cmd() -> None:
    """Run the health sweep schedules in the foreground until stopped (Ctrl-C, SIGTERM). Several such processes
    (and `vms run`) may share one database: each scheduled sweep runs once, in the process that takes its lease."""
    import signal
    import threading

    from vms.jobs.scheduler import build_scheduler, start_health, stop_scheduler

    with errors_to_exit():
        inv = inventory()
        scheduler = build_scheduler(inv, discovery=None, discovery_minutes=0, health=True)
        in_force = start_health(scheduler, inv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    names = ", ".join(f"{s.name} ({s.every})" for s in in_force if s.enabled) or "none"
    console.print(f"vms scheduler: schedules {names}; Ctrl-C stops")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stop_scheduler(scheduler)
    console.print("vms scheduler: stopped")


@app.command("sim")
def sim(
    count: Annotated[int, typer.Option(help="number of simulated devices")] = 50,
    seed: int = 0,
    port: Annotated[int, typer.Option(help="common HTTP port of every device")] = 8080,
    base_host: Annotated[str, typer.Option(help="first device address (loopback)")] = "127.1.0.1",
    rtsp: Annotated[bool, typer.Option(help="serve RTSP streams with gst-rtsp-server")] = True,
    video: Annotated[Path | None, typer.Option(help="serve this video file instead of test patterns")] = None,
    credentials_file: Annotated[Path | None, typer.Option(help="write the fleet's logins here (mode 0600)")] = None,
    faults: Annotated[
        str,
        typer.Option(
            help="none (a healthy fleet), default (about a quarter misbehaves) or a JSON/TOML file mapping "
            "fault -> count (integer) or share (0-1)"
        ),
    ] = "default",
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds (default: Ctrl-C)")] = None,
) -> None:
    """Run a simulated fleet of ONVIF cameras on loopback (the demo, and the test bed)."""
    from probes.sim import run_fleet
    from probes.sim.devices import fault_plan

    try:
        if count < 0:
            raise ValueError(f"--count must be >= 0, not {count}")
        if duration is not None and not duration > 0:
            raise ValueError(f"--duration must be positive, not {duration:g}")
        mix, pinned = fault_plan(faults, count, seed=seed)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}", soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(
        run_fleet(
            count,
            seed=seed,
            port=port,
            base_host=base_host,
            fault_mix=mix,
            faults_by_index=pinned,
            rtsp=rtsp,
            video=video,
            credentials_path=credentials_file,
            duration_s=duration,
        )
    )


@app.command("run")
def run(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """The main job: migrate, start the scheduler (and the simulated fleet when no camera is configured),
    serve the API and dashboard on localhost."""
    import uvicorn

    from api.app import create_app
    from vms.discovery.service import DiscoveryRequest
    from vms.jobs.scheduler import build_scheduler, start_health

    inv = inventory()
    settings = inv.settings
    console.print(f"vms: database {inv.engine.url.render_as_string()}, data dir {settings.data_dir}")
    request: DiscoveryRequest | None = None
    if settings.discovery_ranges or settings.discovery_interfaces:
        request = DiscoveryRequest(
            ranges=settings.discovery_ranges,
            ports=settings.discovery_ports,
            interfaces=settings.discovery_interfaces,
            actor="scheduler",
        )
    fleet = None
    why_demo = "VMS_DEMO_FLEET=on" if settings.demo_fleet == "on" else None
    if settings.demo_fleet == "auto" and request is None:
        why_demo = _why_demo(inv)
    if why_demo is not None:
        fleet, request = _start_demo_fleet(inv, settings, why_demo)
    scheduler = build_scheduler(
        inv, discovery=request, discovery_minutes=settings.discovery_interval_min, health=True
    )
    start_health(scheduler, inv)  # the health sweep schedules (a default one when none is configured)
    gb = _start_gb28181(inv) if settings.gb28181_enabled else None
    console.print(f"vms: API and dashboard on http://{host or settings.api_host}:{port or settings.api_port}/")
    try:
        uvicorn.run(
            create_app(inv, bind_host=host or settings.api_host, warm=True),
            host=host or settings.api_host,
            port=port or settings.api_port,
            log_level=settings.log_level.lower(),
        )
    finally:
        scheduler.shutdown(wait=False)
        if gb is not None:
            gb.stop()
        if fleet is not None:
            fleet.stop()


def _start_gb28181(inv: Any) -> Any:
    """The GB/T 28181 SIP server in-process (VMS_GB28181_ENABLED); a taken port is a warning, not a failure."""
    from vms.gb28181.service import GbService

    settings = inv.settings
    service = GbService(inv)
    try:
        service.start()
    except Exception as exc:  # a taken port above all; the API and the sweeps go on without it
        why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        err.print(
            f"[yellow]warning:[/yellow] GB/T 28181 SIP server not started: {settings.gb28181_host} port "
            f"{settings.gb28181_port}: {why} (another SIP server? set VMS_GB28181_PORT, or "
            "VMS_GB28181_ENABLED=false); going on without it",
            highlight=False,
        )
        return None
    console.print(
        f"vms: GB/T 28181 SIP server {settings.gb28181_id} on {settings.gb28181_host} udp {service.udp_port} "
        f"tcp {service.tcp_port}",
        highlight=False,
    )
    return service


DEMO_SOURCES = frozenset({"ledger:demo-police", "onvif", "api", "gbid-allocator"})


def _why_demo(inv: Any) -> str | None:
    """Why `vms run` starts the demo fleet: no camera configured (an empty inventory), or an inventory that holds
    only what an earlier demo put there (its fleet runs again so that its cameras answer); None otherwise."""
    from vms.inventory.credentials import list_credentials

    with inv.session(write=False) as s:
        cameras = repo.count_cameras(s, repo.CameraFilter(include_removed=True))
        if cameras == 0:
            return "no camera configured"
        sources = {name for name, _ in repo.source_names(s).values()}
        demo_login = any(c.name == "simulated-fleet" for c in list_credentials(s))
    if demo_login and sources <= DEMO_SOURCES:
        return f"the inventory holds only the {cameras} cameras of an earlier demo"
    return None


def _start_demo_fleet(inv: Any, settings: SettingsT, why: str) -> tuple[Any, Any]:
    """Run the simulated fleet on loopback and discover it, as a demo of the real flow (`why` says why)."""
    from vms.discovery.demo import BackgroundFleet, seed_demo
    from vms.discovery.service import DiscoveryRequest
    from vms.inventory.credentials import Cipher, add_credential

    bg = BackgroundFleet(
        count=settings.demo_fleet_size, base_host=settings.demo_fleet_host, port=settings.demo_fleet_port, rtsp=True
    )
    fleet = bg.start()
    offline = sum("offline" in d.faults for d in fleet.devices)
    again = " again" if why.startswith("the inventory holds only") else ""
    console.print(
        f"vms: {why}: starting the demo{again}, a simulated fleet of {len(fleet.devices)} ONVIF devices on "
        f"{bg.cidr()} port {fleet.port}"
        + (f" ({offline} of them deliberately offline, as in a real district)" if offline else "")
        + "; VMS_DEMO_FLEET=off skips it"
    )
    seed_demo(inv, fleet)
    with inv.session() as s:
        add_credential(
            s,
            Cipher(settings.fernet_key()),
            name="simulated-fleet",
            username=fleet.credentials.default_username,
            password=fleet.credentials.default_password,
            scope=bg.cidr(),
            actor="vms run",
            replace=True,
        )
    request = DiscoveryRequest(ranges=[bg.cidr()], ports=[fleet.port], interfaces=["127.0.0.1"], actor="scheduler")
    return bg, request


def main() -> None:
    # The level from the environment now; load_settings() applies VMS_LOG_LEVEL from a .env file as well.
    level = os.environ.get("VMS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every start; the schema version is shown by `vms db upgrade` when it matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # typer's click errors: bad options and arguments, missing files...
        show: Any = getattr(exc, "show", None)
        message: Any = getattr(exc, "format_message", None)
        if type(exc).__name__ == "NoArgsIsHelpError" or message is None:
            if show is not None:
                show()  # `vms` alone, `vms cameras`: the help, as before
            sys.exit(getattr(exc, "exit_code", 2))
        # a bad option or argument: one line and exit 2, like every other bad input
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "vms"
        err.print(f"[red]error:[/red] {_one_line(RuntimeError(message()))} (see {where} --help)")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
