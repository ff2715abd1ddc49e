"""`vms coverage`: counts, the four indicators, covered area and gaps per region (vms.coverage); `vms coverage
refresh`: build the covered areas and keep them in the database, for the serving processes to read.

Registered from vms.cli.main; its helpers (console, JSON output, errors to exit 2) and everything heavy are imported
inside the command: `vms --help` imports none of it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add `vms coverage` (and `vms coverage refresh`) to the `vms` app."""
    coverage_app = typer.Typer(help="Coverage per region; `vms coverage refresh` builds and keeps the covered areas.")
    coverage_app.callback(invoke_without_command=True)(coverage_cmd)
    coverage_app.command("refresh")(refresh_cmd)
    app.add_typer(coverage_app, name="coverage")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def read_places(path: Path) -> list[Any]:
    """Key places from a CSV (columns name, lon/longitude, lat/latitude) or a JSON list of {name, lon, lat}."""
    from vms.coverage.service import MAX_PLACES, Place

    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: want a JSON list of {{name, lon, lat}}")
    else:
        rows = list(csv.DictReader(text.splitlines()))
    places = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: place {i} is not an object with name, lon, lat")
        lower = {str(k).strip().casefold(): v for k, v in row.items()}
        name = lower.get("name")
        lon = lower.get("lon", lower.get("longitude"))
        lat = lower.get("lat", lower.get("latitude"))
        try:
            places.append(Place(str(name or f"place {i}"), float(lon), float(lat)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{path}: place {i} has no numeric lon/lat") from None
        if len(places) > MAX_PLACES:
            raise ValueError(f"{path}: more than {MAX_PLACES} places")
    return places


def coverage_cmd(
    ctx: typer.Context,
    region: Annotated[str | None, typer.Option("--region", help="a region code (its sub-regions included)")] = None,
    places: Annotated[
        Path | None,
        typer.Option("--places", help="key places (CSV name,lon,lat or JSON list): those with no working camera near"),
    ] = None,
    distance: Annotated[float, typer.Option("--distance", help="metres for --places")] = 300.0,
    geojson: Annotated[
        Path | None, typer.Option("--geojson", help="write the covered area per region (WGS-84 GeoJSON) to this file")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Coverage per region: cameras, working, per km2, covered area and share, the four indicators, gaps."""
    if ctx.invoked_subcommand is not None:  # `vms coverage refresh`
        return
    from rich.markup import escape
    from rich.table import Table

    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.coverage.service import Coverage
        from vms.errors import ValidationFailed

        code = region.strip() if region is not None else None
        if region is not None and not code:
            raise ValueError("--region: give a region code")
        if not 0 < distance <= 100_000:
            raise ValueError("--distance: metres above 0, at most 100000")
        wanted = read_places(places) if places is not None else None
        cov = Coverage(inventory())
        summary = cov.summary(region=code)
        try:
            area: dict[str, Any] | None = cov.area(region=code, working=True)
        except ValidationFailed:  # a code the cameras carry but no region polygon covers
            area = None
        indicators = cov.indicators(region=code)
        gaps = cov.region_gaps()
        if code:
            gaps = [g for g in gaps if g["region"].startswith(code)]
        place_gaps = cov.place_gaps(wanted, distance) if wanted is not None else None
        if geojson is not None:
            geojson.write_text(json.dumps(cov.area_geojson(region=code), ensure_ascii=False), encoding="utf-8")
    data = {
        "summary": summary,
        "area": area,
        "indicators": indicators,
        "region_gaps": gaps,
        "places": place_gaps,
    }
    if as_json:
        emit_json(data)
        return
    where = f" in region {escape(code)}" if code else ""
    console.print(
        f"cameras{where}: {summary['cameras']} ("
        + ", ".join(f"{escape(k)} {v}" for k, v in summary["by_status"].items())
        + ")"
        + (f"; outside every region: {summary['outside_regions']}" if summary["outside_regions"] else "")
    )
    console.print(
        f"online rate {_pct(indicators['online_rate'])} (time-weighted, {indicators['from'][:10]} to "
        f"{indicators['to'][:10]}; now {_pct(indicators['online_rate_now'])}), intact rate "
        f"{_pct(indicators['intact_rate'])}, aggregation rate {_pct(indicators['aggregation_rate'])}, "
        f"data-quality pass rate {_pct(indicators['quality_pass_rate'])}"
    )
    covered = {r["region"]: r for r in (area or {}).get("by_region", [])}
    rates = {r["region"]: r for r in indicators["by_region"]}
    t = Table(
        "region",
        "name",
        "cameras",
        "ON",
        "per km2",
        "area km2",
        "covered km2",
        "covered",
        "online",
        "quality",
        title="by region",
    )
    for row in summary["by_region"]:
        c = covered.get(row["region"], {})
        r = rates.get(row["region"], {})
        t.add_row(
            escape(row["region"]),
            escape(row["name"] or ""),
            str(row["cameras"]),
            str(row["by_status"].get("ON", 0)),
            _num(row["per_km2"]),
            _num(row["area_km2"]),
            _num(c.get("covered_km2"), 4),
            _pct(c.get("covered_share")),
            _pct(r.get("online_rate")),
            _pct(r.get("quality_pass_rate")),
        )
    console.print(t)
    if area is not None:
        console.print(
            f"covered: {area['covered_km2']:.4f} of {area['area_km2']:.2f} km2 ({_pct(area['covered_share'])}); by "
            f"working cameras {area['working_km2']:.4f} km2 ({_pct(area['working_share'])})"
        )
    if gaps:
        console.print(
            f"regions with no working camera: {len(gaps)}: "
            + escape(", ".join(f"{g['name'] or g['region']} ({g['cameras']} cameras)" for g in gaps[:20]))
            + (" ..." if len(gaps) > 20 else "")
        )
    if place_gaps is not None:
        missing = place_gaps["gaps"]
        console.print(
            f"key places with no working camera within {distance:g} m: {len(missing)} of {len(place_gaps['places'])}"
        )
        for p in missing[:50]:
            console.print(f"  {escape(p['name'])} ({p['lon']:.6f}, {p['lat']:.6f})")
    if geojson is not None:
        console.print(f"covered area written to {escape(str(geojson))}")


def refresh_cmd(
    force: Annotated[
        bool, typer.Option("--force", help="build every covered area again, also those kept that still match")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Build the covered areas (every camera's and the working cameras' views per region) that the kept ones no
    longer match and keep them in the database: a `vms serve` worker then reads them when it starts instead of
    building them (seconds of CPU at 100,000 cameras). Exit 1 if the database could not be written now."""
    from vms.cli.main import console, emit_json, errors_to_exit, inventory

    with errors_to_exit():
        from vms.coverage.service import Coverage

        cov = Coverage(inventory())
        with console.status("building the covered areas..."):
            out = cov.refresh(force=force)
    if as_json:
        emit_json(out)
    else:
        console.print(
            f"covered areas of {out['regions']} regions in {out['seconds']:.1f} s: {out['built']} built, "
            f"{out['reworked']} working unions built, {out['read']} read as kept; "
            + (
                "[red]not kept[/red]: the database cannot be written now (another writer, or read-only access)"
                if out["kept"] is False
                else "kept in the database"
            )
        )
    if out["kept"] is False:
        raise typer.Exit(1)
