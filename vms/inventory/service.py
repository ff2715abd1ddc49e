"""The service layer the CLI, the API and scheduled jobs call. Built by a factory from Settings."""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from vms.catalog.columns import login_free
from vms.catalog.domain import Observation, RowIssue, SourceKind, normalize_mac
from vms.catalog.fields import FIELD_NAMES
from vms.errors import Conflict, NotFound, ValidationFailed
from vms.geo.placement import RegionContext
from vms.inventory.credentials import (
    LOGIN_INCOMPLETE,
    LOGIN_NO_HOST,
    Cipher,
    login_host,
    store_url_logins,
    url_logins,
)
from vms.inventory.ingest import (
    IngestResult,
    IngestRun,
    ingest,
    load_region_context,
    observation_key,
    reassign_regions,
    remerge,
)
from vms.inventory.merge import SourcedRecord, merge_observations
from vms.inventory.quality import COLUMNS as QUALITY_COLUMNS
from vms.inventory.quality import QualityContext, QualityReport, check_all
from vms.settings import Settings
from vms.store import problems as stored_problems
from vms.store import repository as repo
from vms.store.db import busy_as_domain_error, make_engine, make_sessionmaker, private_dir, upgrade
from vms.store.models import Source, utcnow

if TYPE_CHECKING:
    from vms.inventory.problems import FirstImportCheck

log = logging.getLogger(__name__)

MAX_STORED_ISSUES = 1000
MAX_TAGS = 32  # an operator's labels per camera
MAX_TAG_CHARS = 64
EXPORT_PAGE = 1000  # cameras an export reads at a time (Inventory.iter_cameras)
# An import that changed this many cameras refreshes the search index's statistics (PostgreSQL) afterwards.
LARGE_WRITE = 1000
_PROBLEMS_REBUILD = threading.Lock()
CAMERA_TYPES = frozenset({"131", "132"})


@dataclass
class ImportReport:
    path: str
    source: str
    kind: SourceKind
    format: str
    encoding: str | None
    dry_run: bool
    rows: int
    accepted: int
    rejected: int
    nodes: int
    issues: list[RowIssue]  # the first ones in full (importers.ISSUE_CAP)
    result: IngestResult
    run_id: int | None = None
    issue_counts: dict[tuple[str, bool], int] = field(default_factory=dict)  # (code, rejecting) -> all of them
    # The file and the source's stored records were as the source's last import left them: no row was read, the
    # report is that import's (Inventory.import_file's whole-file shortcut).
    file_unchanged: bool = False
    rows_read: int = 0  # rows the reader went through this time (0 when file_unchanged)
    # Logins the file carried (URL user info, login columns) moved to the encrypted credential store, by host.
    logins_stored: int = 0

    @property
    def issues_total(self) -> int:
        return sum(self.issue_counts.values()) if self.issue_counts else len(self.issues)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source,
            "kind": self.kind.value,
            "format": self.format,
            "encoding": self.encoding,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "catalog_nodes": self.nodes,
            **self.result.counts(),
            "changed": self.result.changed,
            "issues": [_issue_dict(i) for i in self.issues],
            "issues_total": self.issues_total,
            "issue_counts": _issue_counts(self.issue_counts),
            "identity_conflicts": self.result.identity_conflicts,
            "timings": self.result.timings,
            "run_id": self.run_id,
            "file_unchanged": self.file_unchanged,
            "logins_stored": self.logins_stored,
        }


@dataclass
class RegionImportReport:
    path: str
    created: int
    updated: int
    with_geometry: int
    cameras_moved: int
    # Regions the file gave no code: their codes were generated from their names (never the name itself).
    generated_codes: int = 0


@dataclass
class IdAllocation:
    """GB IDs given by ``Inventory.allocate_ids`` and the cameras left without one, with why."""

    allocated: list[tuple[int, str]]  # (camera id, new device ID)
    skipped: list[dict[str, Any]]  # id, name, local_id, civil_code, region_by_position, reason
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "allocated": [{"id": cid, "device_id": gid} for cid, gid in self.allocated],
            "skipped": self.skipped,
        }


@dataclass
class Stat:
    key: str | None
    name: str | None
    count: int
    extra: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[str, int, int], None]


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


class Inventory:
    """Use cases over one database. Stateless apart from its engine; safe to share between threads."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        if settings.data_dir.exists():
            private_dir(settings.data_dir)  # 0700: the database, key file and exports are nobody else's
        self.engine = engine or make_engine(settings.url, lock_timeout=settings.db_lock_timeout)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)

    # --- plumbing --------------------------------------------------------------------------------------

    def upgrade(self) -> None:
        upgrade(self.engine)

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        # A write that waited db_lock_timeout for another (a long import) fails as Busy: HTTP 503, Retry-After.
        with busy_as_domain_error(max(1, round(self.settings.db_lock_timeout))), self.sessions() as s:
            try:
                yield s
                if write:
                    s.commit()
            except BaseException:
                s.rollback()
                raise

    def rank(self, source: str, kind: SourceKind) -> int:
        return self.settings.priority_rank(source, kind)

    def region_context(self, session: Session) -> RegionContext:
        return load_region_context(session)

    def refresh_problems(
        self, session: Session, camera_ids: Iterable[int], *, parents: Collection[str] = (), full: bool = False
    ) -> None:
        """Keep the stored quality problems current after a write (vms.inventory.problems); same transaction."""
        from vms.inventory import problems

        problems.refresh(
            session, camera_ids, governed=self.settings.governed_region or None, parents=parents, full=full
        )

    def _first_import_check(self, session: Session, source: str) -> FirstImportCheck | None:
        from vms.inventory.problems import FirstImportCheck

        return FirstImportCheck.start(session, governed=self.settings.governed_region or None, source=source)

    # --- imports ---------------------------------------------------------------------------------------

    def import_file(
        self,
        path: Path,
        *,
        source: str | None = None,
        kind: SourceKind | None = None,
        fmt: str | None = None,
        column_map: Mapping[str, str] | None = None,
        encoding: str | None = None,
        crs: str | None = None,
        dry_run: bool = False,
        snapshot: bool = True,
        allow_removals: bool = False,
        actor: str = "cli",
        progress: Progress = _no_progress,
    ) -> ImportReport:
        """Read a ledger or catalog file and merge it as ``source``'s full list (``snapshot``) or part of it.

        A snapshot that would remove more than ``settings.max_removal_share`` of the source's cameras (a
        header-only file, a file whose every row is rejected, the wrong file) raises RemovalRefused and changes
        nothing, unless ``allow_removals``.
        """
        from vms.catalog.columns import ColumnMap, load_column_map
        from vms.catalog.domain import ParsedRow
        from vms.ingest.importers import peek_format, read_records

        overrides: dict[str, str] = {}
        if self.settings.column_map_file:
            overrides.update(load_column_map(self.settings.column_map_file).overrides)
        overrides.update(column_map or {})
        kind = kind or (SourceKind.CATALOG if peek_format(path, fmt) == "xml" else SourceKind.LEDGER)
        source = source or f"{kind.value}:{path.stem}"
        started = time.perf_counter()
        progress("import", 0, 0)
        # The file's digest with everything that decides how it reads: when it and the source's stored records are
        # as the source's last import left them, that import's report is replayed and no row is read.
        digest_of = (path, kind, fmt, overrides, encoding, crs, snapshot)
        digest = None if dry_run else self._file_digest(*digest_of)
        if digest is not None:
            with self.session() as s:
                replayed = self._replay_import(s, path, source, kind, digest, snapshot, actor, started)
            if replayed is not None:
                progress("import", replayed.rows, replayed.rows)
                return replayed
        # Rows stream from the reader into the ingest a chunk at a time, all in one transaction: memory stays
        # flat however long the file, and a failure (or a refused removal) leaves nothing changed.
        with self.session() as s:
            # Into an empty inventory, the new cameras' quality problems are checked as they are written.
            first = None if dry_run else self._first_import_check(s, source)
            run = IngestRun(
                s,
                source=source,
                kind=kind,
                rank=self.rank,
                regions=self.region_context(s),
                snapshot=snapshot,
                progress=None,
                max_removal_share=None if allow_removals else self.settings.max_removal_share,
                on_created=None if first is None else first.created,
            )
            cipher = Cipher(self.settings.fernet_key())
            tally = {"observations": 0, "nodes": 0, "rows": 0, "logins": 0}
            dropped: dict[str, list[int]] = {}  # LOGIN_NO_HOST / LOGIN_INCOMPLETE -> [rows, first line]
            node_ids: set[str] = set()
            merging = time.perf_counter()
            # The rows the source's last import stored, by raw digest: unchanged CSV rows are not parsed again.
            known = run.known_rows()
            merging = time.perf_counter() - merging

            def sink(rows: list[ParsedRow]) -> None:
                nonlocal merging
                t = time.perf_counter()
                observations: list[Observation] = []
                nodes: list[dict[str, Any]] = []
                column_logins: dict[str, tuple[str, str]] = {}
                for row in rows:
                    if row.rejected:
                        continue
                    if row.login is not None:  # a ledger's login columns: to the credential store, by host
                        host = login_host(row.fields.get("ip_address"))
                        if host is not None and all(row.login):
                            column_logins.setdefault(host, row.login)
                        elif host is not None or row.login[1]:
                            why = LOGIN_INCOMPLETE if host is not None else LOGIN_NO_HOST
                            dropped.setdefault(why, [0, row.line])[0] += 1
                        row.login = None
                    device_id = str(row.fields.get("device_id") or "")
                    if kind is SourceKind.CATALOG and device_id and device_id[10:13] not in CAMERA_TYPES:
                        # Platforms, NVRs, business groups and virtual organisations are tree nodes, not cameras.
                        nodes.append({**row.fields})
                        continue
                    key = observation_key(row.fields, row.line)
                    raw = (row.raw_digest, row.raw_spot, row.raw_issues)
                    observations.append(Observation(source, kind, key, row.fields, row.extra, row.line, *raw))
                unchanged = known.take()
                run.add(observations, unchanged)
                logins = url_logins(o.fields for o in observations)
                if logins:
                    tally["logins"] += store_url_logins(cipher, s, logins, actor)
                if column_logins:
                    tally["logins"] += store_url_logins(cipher, s, column_logins, actor, prefix="ledger")
                if nodes:
                    repo.upsert_nodes(s, nodes, run.src.id)
                    node_ids.update(str(n["device_id"]) for n in nodes)
                tally["observations"] += len(observations) + len(unchanged[0])
                tally["nodes"] += len(nodes)
                tally["rows"] += len(rows) + len(unchanged[0])
                merging += time.perf_counter() - t
                progress("import", tally["rows"], 0)

            read = read_records(
                path, fmt=fmt, column_map=ColumnMap(overrides), encoding=encoding, crs=crs, sink=sink, known=known
            )
            t = time.perf_counter()
            result = run.finish()
            merging += time.perf_counter() - t
            result.timings = {"read": round(time.perf_counter() - started - merging, 3), **result.timings}
            report = ImportReport(
                path=str(path),
                source=source,
                kind=kind,
                format=read.format,
                encoding=read.encoding,
                dry_run=dry_run,
                rows=read.total_rows,
                accepted=tally["observations"] + tally["nodes"],
                rejected=read.rejected_rows,
                nodes=tally["nodes"],
                issues=list(read.issues),
                result=result,
                issue_counts=dict(read.issue_counts),
                rows_read=read.total_rows,
                logins_stored=tally["logins"],
            )
            for code, (n, line) in dropped.items():  # once per import, never with the value
                unit = {"csv": "line", "xlsx": "row"}.get(read.format, "record")
                what = (
                    "a password without an IP address to keep it for"
                    if code == LOGIN_NO_HOST
                    else "a login without both a user name and a password"
                )
                more = f" (and {n - 1:,} more rows)" if n > 1 else ""
                report.issues.append(RowIssue(line, code, f"{unit} {line}: {what}: dropped, not stored{more}", False))
                report.issue_counts[(code, False)] = 1
            if dry_run:
                s.rollback()
                return report
            if first is None:
                self.refresh_problems(s, result.camera_ids, parents=node_ids)
            else:
                first.finish(run.touched, parents=node_ids)
            self._record_import(s, report, run.src.id, actor)
            # Catalog nodes and URL logins are written outside the source's records (the state token does not
            # cover them): such an import is not replayed. Nor is one whose file changed while it was read.
            replayable = not tally["nodes"] and not tally["logins"]
            if digest is not None and replayable and digest == self._file_digest(*digest_of):
                self._remember_file(s, run.src, digest, report)
            else:
                run.src.file_digest = run.src.file_state = run.src.file_report = None
        if len(result.camera_ids) >= LARGE_WRITE:
            with self.session() as s:
                repo.refresh_search_index(s)
        progress("import", tally["rows"], tally["rows"])
        return report

    @staticmethod
    def _file_digest(
        path: Path,
        kind: SourceKind,
        fmt: str | None,
        overrides: Mapping[str, str],
        encoding: str | None,
        crs: str | None,
        snapshot: bool,
    ) -> str | None:
        from vms.ingest.importers import file_digest

        parts = (kind.value, fmt, sorted(overrides.items()), encoding, crs, snapshot)
        return file_digest(path, *parts, modules=(__name__, "vms.inventory.ingest", "vms.inventory.credentials"))

    def _record_import(self, s: Session, report: ImportReport, source_id: int, actor: str) -> None:
        """The import run (counts, the first MAX_STORED_ISSUES issues in full) and its audit entry."""
        counts = report.result.counts()
        report.run_id = repo.record_import_run(
            s,
            source_id=source_id,
            path=report.path,
            fmt=report.format,
            counts=counts | {"rows": report.rows, "accepted": report.accepted, "rejected": report.rejected},
            issues={
                "items": [_issue_dict(i) for i in report.issues[:MAX_STORED_ISSUES]],
                "truncated": max(0, report.issues_total - MAX_STORED_ISSUES),
                "counts": _issue_counts(report.issue_counts),
            },
        )
        repo.audit(
            s,
            actor=actor,
            action="import",
            target=report.source,
            details={"path": report.path, "run_id": report.run_id, **counts},
        )

    @staticmethod
    def _remember_file(s: Session, src: Source, digest: str, report: ImportReport) -> None:
        """Store with the source what a re-import of the same file replays: the file's digest, the report (every
        issue kept, as JSON compressed) and a token of the source's records as this import leaves them."""
        r = report.result
        body = {
            "format": report.format,
            "encoding": report.encoding,
            "rows": report.rows,
            "accepted": report.accepted,
            "rejected": report.rejected,
            # Every record this import listed (once per key) is unchanged next time.
            "listed": r.observations_new + r.observations_changed + r.observations_unchanged,
            "issues": [[i.line, i.code, i.reason, i.fatal, i.field] for i in report.issues],
            "issue_counts": [[code, fatal, n] for (code, fatal), n in report.issue_counts.items()],
        }
        src.file_digest = digest
        src.file_report = zlib.compress(json.dumps(body, ensure_ascii=False).encode(), 6)
        src.file_state = _file_state(s, src, repo.observation_state(s, src.id))

    def _replay_import(
        self,
        s: Session,
        path: Path,
        source: str,
        kind: SourceKind,
        digest: str,
        snapshot: bool,
        actor: str,
        started: float,
    ) -> ImportReport | None:
        """The report of the source's last import, recorded again as this import's, if the file's digest and the
        token of the source's records are what that import left; None otherwise (the file is read)."""
        src = s.scalar(select(Source).where(Source.name == source).with_for_update())  # one at a time (PostgreSQL)
        if src is None or src.file_digest != digest or src.file_report is None or src.file_state is None:
            return None
        records = repo.observation_state(s, src.id)
        if _file_state(s, src, records, written=False) != src.file_state:
            return None
        body = json.loads(zlib.decompress(src.file_report))
        now = utcnow()
        src.last_import_at = now  # as an ingest does; a snapshot listed every record again
        if snapshot:
            src.listed_at = now
        result = IngestResult(source=source, observations_unchanged=body["listed"], unparsed=body["listed"])
        report = ImportReport(
            path=str(path),
            source=source,
            kind=kind,
            format=body["format"],
            encoding=body["encoding"],
            dry_run=False,
            rows=body["rows"],
            accepted=body["accepted"],
            rejected=body["rejected"],
            nodes=0,
            issues=[RowIssue(line, code, reason, fatal, fld) for line, code, reason, fatal, fld in body["issues"]],
            result=result,
            issue_counts={(code, fatal): n for code, fatal, n in body["issue_counts"]},
            file_unchanged=True,
        )
        self._record_import(s, report, src.id, actor)
        src.file_state = _file_state(s, src, records)  # the records are as they were: this wrote none
        result.timings = {"read": 0.0, "whole_file": round(time.perf_counter() - started, 3)}
        return report

    def ingest_observations(
        self,
        observations: Sequence[Observation],
        *,
        source: str,
        kind: SourceKind,
        snapshot: bool,
        actor: str,
        pinned: Mapping[str, int] | None = None,
    ) -> IngestResult:
        """For producers other than files (discovery, API edits)."""
        with self.session() as s:
            result = ingest(
                s,
                source=source,
                kind=kind,
                observations=observations,
                rank=self.rank,
                regions=self.region_context(s),
                snapshot=snapshot,
                pinned=pinned,
            )
            self.refresh_problems(s, result.camera_ids)
            if result.changed:
                repo.audit(s, actor=actor, action=f"ingest:{kind.value}", target=source, details=result.counts())
            return result

    # --- regions ---------------------------------------------------------------------------------------

    def import_regions(
        self,
        path: Path,
        *,
        crs: str = "auto",
        code_property: str | None = None,
        name_property: str | None = None,
        actor: str = "cli",
    ) -> RegionImportReport:
        from vms.geo.regions import read_regions

        records = read_regions(path, crs=crs, code_property=code_property, name_property=name_property)
        with self.session() as s:
            created, updated = repo.upsert_regions(s, records)
            moved = reassign_regions(s, self.region_context(s))
            self.refresh_problems(s, (), full=True)  # civil codes, polygons and placements all changed
            repo.audit(
                s,
                actor=actor,
                action="regions.import",
                target=str(path),
                details={"created": created, "updated": updated, "cameras_moved": moved},
            )
        return RegionImportReport(
            str(path),
            created,
            updated,
            sum(1 for r in records if r.geometry_wkb),
            moved,
            generated_codes=sum(1 for r in records if r.code_generated),
        )

    def list_regions_page(self, *, limit: int, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        with self.session(write=False) as s:
            total, rows = repo.regions_page(s, limit=limit, offset=offset)
        return total, [
            {"code": r.code, "name": r.name, "parent_code": r.parent_code, "level": r.level, "source": r.source}
            for r in rows
        ]

    def list_regions(self) -> list[dict[str, Any]]:
        with self.session(write=False) as s:
            return [
                {"code": r.code, "name": r.name, "parent_code": r.parent_code, "level": r.level, "source": r.source}
                for r in repo.regions(s)
            ]

    # --- quality and statistics -----------------------------------------------------------------------

    def quality_context(self, session: Session, *, parents: Container[str] | None = None) -> QualityContext:
        names = repo.region_codes_and_names(session)
        numeric = {c for c in names if c.isdigit()}
        governed = self.settings.governed_region or None
        polygons = set(repo.polygon_codes(session))
        if parents is None:
            parents = set(repo.all_device_ids(session)) | repo.node_ids(session) | set(names)
        return QualityContext(
            governed=governed,
            known_civil_codes=numeric or None,
            has_polygons=bool(polygons),
            governed_has_polygon=bool(governed and governed in polygons),
            known_parents=parents,
        )

    def quality(self, *, cameras: bool = True) -> tuple[QualityReport, dict[str, str]]:
        """The data-quality report, read from the problems every write keeps current (vms.inventory.problems).

        ``cameras``: also every failing camera's problems, which grows with the inventory (the CLI's --cameras);
        the API pages them with ``quality_cameras``.
        """
        from vms.inventory import problems
        from vms.store import problems as stored

        self.ensure_problems_current()
        with self.session(write=False) as s:
            report = problems.summary(s, target=self.settings.quality_target)
            if cameras:
                report.problems = dict(stored.all_problems(s))
            names = stored.region_names(s, [code for code in report.by_region if code])
        return report, names

    def quality_from_scratch(self) -> tuple[QualityReport, dict[str, str]]:
        """The same report by checking every camera now: the reference the stored problems are tested against."""
        with self.session(write=False) as s:
            ctx = self.quality_context(s)
            cams = repo.camera_dicts(s, QUALITY_COLUMNS)
            sources = repo.camera_sources(s)
            names = repo.region_codes_and_names(s)
        return check_all(cams, ctx, sources=sources, target=self.settings.quality_target), names

    def quality_cameras(
        self, *, code: str | None = None, region: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """A page of failing cameras (all, those failing rule ``code``, or those in ``region``), by id."""
        from vms.store import problems as stored

        self.ensure_problems_current()
        with self.session(write=False) as s:
            total, rows = stored.failing(s, code=code, region=region, limit=limit, offset=offset)
        return total, [{"id": i, "device_id": d, "name": n, "problems": p} for i, d, n, p in rows]

    def camera_problems(self, camera_id: int) -> list[str]:
        """One camera's problems, the same as the full report gives: a lookup of the stored problems."""
        from vms.store import problems as stored

        self.ensure_problems_current()
        with self.session(write=False) as s:
            return stored.problems_of(s, camera_id)

    def ensure_problems_current(self) -> None:
        """Check every camera again when the rules, the governed region or the regions changed since the stored
        problems were computed (after an upgrade, say): once, by the first reader that notices."""
        from vms.inventory import problems

        governed = self.settings.governed_region or None
        with self.session(write=False) as s:
            if problems.is_current(s, governed):
                return
        with _PROBLEMS_REBUILD, self.session() as s:
            problems.refresh(s, (), governed=governed)  # checks again under the lock: one rebuild, not one each

    def stats(self, by: str, *, limit: int | None = None, offset: int = 0) -> list[Stat]:
        """Camera counts grouped by ``by``, in key order; ``limit``/``offset`` page the groups."""
        with self.session(write=False) as s:
            if by == "region":
                rows = repo.count_by(s, "region_code", limit=limit, offset=offset)
                names = stored_problems.region_names(s, [k for k, _ in rows if k])
                return [Stat(k, names.get(k) if k else None, n) for k, n in rows]
            if by == "status":
                return [Stat(k, None, n) for k, n in repo.count_by(s, "status", limit=limit, offset=offset)]
            if by == "source":
                return [
                    Stat(name, None, n, {"kind": kind})
                    for name, kind, n in repo.count_by_source(s, limit=limit, offset=offset)
                ]
            if by == "manufacturer":
                return [Stat(k, None, n) for k, n in repo.count_by(s, "manufacturer", limit=limit, offset=offset)]
        raise ValidationFailed(f"cannot group by {by!r}: choose region, status, source or manufacturer")

    # --- cameras --------------------------------------------------------------------------------------

    def list_cameras(
        self, flt: repo.CameraFilter, *, limit: int | None = 100, offset: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        with self.session(write=False) as s:
            return repo.count_cameras(s, flt), repo.list_cameras(s, flt, limit=limit, offset=offset)

    def camera_page(self, flt: repo.CameraFilter, *, limit: int, offset: int = 0) -> repo.CameraPage:
        """A page of cameras and their number, exact up to repo.COUNT_CAP matches (the API's pages)."""
        with self.session(write=False) as s:
            return repo.camera_page(s, flt, limit=limit, offset=offset)

    def camera_cursor_page(
        self, flt: repo.CameraFilter, *, after: int, limit: int, columns: Sequence[str] | None = None
    ) -> tuple[repo.CameraPage, bool]:
        """The page of cameras after id ``after`` (keyset, id order) and whether more follow; the total as
        :meth:`camera_page` gives it (exact up to repo.COUNT_CAP matches)."""
        with self.session(write=False) as s:
            return repo.cursor_page(s, flt, after=after, limit=limit, columns=columns)

    def iter_cameras(
        self, flt: repo.CameraFilter, *, columns: Sequence[str] | None = None, page: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every camera matching ``flt``, in id order, read a page at a time by keyset (each page its own short
        read): at most ``page`` (EXPORT_PAGE) rows in memory whatever the list's length (streamed exports)."""
        page = page or EXPORT_PAGE
        after = 0
        while True:
            with self.session(write=False) as s:
                rows = repo.camera_keyset(s, flt, after=after, limit=page, columns=columns)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def count_matching(self, flt: repo.CameraFilter) -> int:
        """The exact number of cameras matching ``flt``."""
        with self.session(write=False) as s:
            return repo.count_cameras(s, flt)

    def resolve_camera(self, session: Session, ref: str) -> int:
        """A camera by database id, GB device ID, department number (local_id) or MAC."""
        ref = ref.strip()
        if ref.isdigit() and len(ref) < 20 and repo.camera(session, int(ref)) is not None:
            return int(ref)
        for column in ("device_id", "local_id", "mac"):
            ids = repo.camera_ids_by(session, column, normalize_mac(ref) or ref if column == "mac" else ref)
            if ids:
                return ids[0]
        raise NotFound(f"no camera {ref!r} (give an id, a GB device ID, a department number or a MAC)")

    def show_camera(self, ref: str) -> dict[str, Any]:
        """The record, each field's provenance (source, when) and the values other sources disagree with."""
        with self.session(write=False) as s:
            cid = self.resolve_camera(s, ref)
            row = repo.camera(s, cid)
            assert row is not None
            live = repo.live_observations(s, [cid]).get(cid, [])
            merged = merge_observations(
                [SourcedRecord(o.source, o.kind, o.fields, o.updated_at, o.extra) for o in live], self.rank
            )
            sources = [
                {
                    "source": r.name,
                    "kind": r.kind,
                    "key": r.key,
                    "line": r.line,
                    "first_seen": r.first_seen,
                    "updated_at": r.updated_at,
                    "seen_at": r.seen_at,
                    "removed_at": r.removed_at,
                }
                for r in repo.source_of_observation(s, cid)
            ]
            names = repo.region_codes_and_names(s)
        provenance = {
            name: {
                "source": p.source,
                "kind": p.kind.value,
                "at": p.at.isoformat(),
                "conflicts": merged.conflicts.get(name),
            }
            for name, p in merged.provenance.items()
        }
        return {
            "id": cid,
            "record": {k: row[k] for k in FIELD_NAMES},
            "extra": login_free(row["extra"]) if row["extra"] else row["extra"],  # never a login column's value
            "region_code": row["region_code"],
            "region_name": names.get(row["region_code"] or ""),
            "region_by_position": row["region_by_position"],
            "region_by_code": row["region_by_code"],
            "tags": row.get("tags") or [],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "removed_at": row["removed_at"],
            "provenance": provenance,
            "conflicts": row["conflicts"] or {},
            "sources": sources,
        }

    def edit_camera(self, ref: str, changes: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
        """An operator's correction: stored as the 'api' source's observation, so it wins by priority."""
        from vms.inventory.edits import validate_edit

        clean = validate_edit(changes)  # the importer's parsers and checks; nothing dropped silently
        with self.session() as s:
            cid = self.resolve_camera(s, ref)
            device_id = clean.get("device_id")
            holders = [i for i in repo.camera_ids_by(s, "device_id", device_id) if i != cid] if device_id else []
            if holders:
                raise Conflict(f"GB ID {device_id} already belongs to camera {holders[0]}; IDs are unique")
            key = f"camera:{cid}"
            previous = {o.key: o.fields for o in repo.live_observations(s, [cid]).get(cid, []) if o.source == "api"}
            fields = {**previous.get(key, {}), **clean}
            fields = {k: v for k, v in fields.items() if v is not None}
            logins = url_logins([clean])
            if logins:
                store_url_logins(Cipher(self.settings.fernet_key()), s, logins, actor)
            edited = ingest(
                s,
                source="api",
                kind=SourceKind.API,
                observations=[Observation("api", SourceKind.API, key, fields)],
                rank=self.rank,
                regions=self.region_context(s),
                snapshot=False,
                pinned={key: cid},
            )
            self.refresh_problems(s, edited.camera_ids | {cid})
            repo.audit(s, actor=actor, action="camera.edit", target=str(cid), details={"fields": sorted(clean)})
        return self.show_camera(str(cid))

    def tag_camera(self, ref: str, tags: Sequence[str], *, remove: bool = False, actor: str) -> list[str]:
        """Add (or with ``remove`` take off) an operator's labels on a camera, for sweep groups; audited like an
        edit. Returns the camera's tags after. ValidationFailed for an empty, over-long or control-character tag."""
        clean: list[str] = []
        for raw in tags:
            tag = raw.strip()
            if not tag or len(tag) > MAX_TAG_CHARS or any(ord(c) < 32 or c in ",\x7f" for c in tag):
                raise ValidationFailed(
                    f"tag {raw[:40]!r}: want 1 to {MAX_TAG_CHARS} characters, no comma or control character"
                )
            clean.append(tag)
        if not clean:
            raise ValidationFailed("no tag given")
        with self.session() as s:
            cid = self.resolve_camera(s, ref)
            row = repo.camera(s, cid)
            assert row is not None
            before = [str(t) for t in (row.get("tags") or [])]
            after = [t for t in before if t not in clean] if remove else sorted(set(before) | set(clean))
            if len(after) > MAX_TAGS:
                raise ValidationFailed(f"a camera carries at most {MAX_TAGS} tags ({len(after)} asked)")
            if after != before:
                repo.update_cameras(s, [{"_id": cid, "tags": after or None}])
                repo.audit(
                    s,
                    actor=actor,
                    action="camera.untag" if remove else "camera.tag",
                    target=str(cid),
                    details={"tags": clean},
                )
        return after

    def allocate_ids(
        self,
        *,
        centre: str | None = None,
        civil_code: str | None = None,
        industry: str = "00",
        type_code: str = "132",
        network: str = "6",
        actor: str = "cli",
        dry_run: bool = False,
    ) -> IdAllocation:
        """Give cameras without a GB ID a new one, never colliding with a known ID.

        The ID's centre code comes from ``centre`` when given, else from the camera's civil code, else from the
        known region its position lies in, else from ``civil_code`` (the operator's choice for the rest).
        Cameras with none of these are skipped and listed: an ID names a region, and guessing it (the governed
        region, say) would put a camera somewhere it is not.
        """
        from vms.catalog.gbid import allocate_gb_ids

        fallback = None
        if civil_code is not None:
            fallback = _centre_code(civil_code)
            if fallback is None:
                raise ValidationFailed(f"civil code {civil_code!r} must be a 6- or 8-digit code (e.g. 371311)")
        with self.session() as s:
            existing = repo.all_device_ids(s) + sorted(repo.node_ids(s))
            columns = ["id", "device_id", "name", "local_id", "civil_code", "region_by_position"]
            rows = [r for r in repo.list_cameras(s, repo.CameraFilter(), columns=columns) if not r["device_id"]]
            groups: dict[str, list[int]] = {}
            skipped: list[dict[str, Any]] = []
            names = repo.region_codes_and_names(s) if rows else {}
            for r in rows:
                cc = centre or _centre_code(r["civil_code"]) or _centre_code(r["region_by_position"]) or fallback
                if cc is None:
                    skipped.append(
                        {
                            "id": r["id"],
                            "name": r["name"],
                            "local_id": r["local_id"],
                            "civil_code": r["civil_code"],
                            "region_by_position": r["region_by_position"],
                            "reason": _no_centre_reason(r["civil_code"], r["region_by_position"], names),
                        }
                    )
                    continue
                groups.setdefault(cc, []).append(r["id"])
            allocated: list[tuple[int, str]] = []
            for cc, ids in sorted(groups.items()):
                new = allocate_gb_ids(
                    existing, centre=cc, industry=industry, type_code=type_code, network=network, count=len(ids)
                )
                existing.extend(new)
                allocated.extend(zip(ids, new, strict=True))
            result = IdAllocation(allocated, skipped, dry_run)
            if dry_run or not allocated:
                s.rollback()
                return result
            obs = [
                Observation("gbid-allocator", SourceKind.API, f"camera:{cid}", {"device_id": gid})
                for cid, gid in allocated
            ]
            given = ingest(
                s,
                source="gbid-allocator",
                kind=SourceKind.API,
                observations=obs,
                rank=self.rank,
                regions=self.region_context(s),
                snapshot=False,
                pinned={f"camera:{cid}": cid for cid, _ in allocated},
            )
            self.refresh_problems(s, given.camera_ids)
            repo.audit(
                s, actor=actor, action="ids.allocate", details={"count": len(allocated), "skipped": len(skipped)}
            )
        return result

    def remerge_all(self) -> int:
        """Recompute every record (after the source priority changes)."""
        with self.session() as s:
            ids = {r["id"] for r in repo.list_cameras(s, repo.CameraFilter(include_removed=True), columns=["id"])}
            changed = remerge(s, ids, rank=self.rank, regions=self.region_context(s), now=utcnow())
            self.refresh_problems(s, changed)
            if changed:
                repo.audit(s, actor="cli", action="remerge", details={"changed": len(changed)})
            return len(changed)

    # --- export ---------------------------------------------------------------------------------------

    def export(
        self, path: Path, *, fmt: str | None = None, flt: repo.CameraFilter | None = None, actor: str = "cli"
    ) -> int:
        from vms.ingest import exporters

        fmt = fmt or _format_from_suffix(path)
        with self.session() as s:
            rows = repo.list_cameras(s, flt or repo.CameraFilter())
            records = [{**{k: r[k] for k in FIELD_NAMES}, "extra": r["extra"] or {}} for r in rows]
            if fmt == "csv":
                exporters.write_csv(records, path)
            elif fmt == "geojson":
                exporters.write_geojson(records, path)
            elif fmt == "xml":
                exporters.write_catalog_xml(records, path)
            else:
                raise ValidationFailed(f"unknown export format {fmt!r}: csv, geojson or xml")
            repo.audit(s, actor=actor, action="export", target=str(path), details={"format": fmt, "count": len(rows)})
        return len(records)


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"json": "geojson", "geojson": "geojson", "xml": "xml", "csv": "csv"}.get(suffix, suffix)


def _centre_code(code: str | None) -> str | None:
    """The 8-digit centre of an ID from a civil or region code of 6 or more digits (None for anything else)."""
    text = (code or "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) >= 8:
        return text[:8]
    if len(text) == 6:
        return text + "00"
    return None


def _no_centre_reason(civil_code: str | None, region: str | None, names: Mapping[str, str]) -> str:
    parts = [f"civil code {civil_code!r} is not a 6- or 8-digit code" if civil_code else "no civil code"]
    if region:
        label = f"{names[region]} ({region})" if names.get(region) else region
        parts.append(f"its position's region {label} has no civil code")
    else:
        parts.append("no position in a known region")
    return ", ".join(parts)


def _issue_counts(counts: Mapping[tuple[str, bool], int]) -> list[dict[str, Any]]:
    return [{"code": code, "rejected": fatal, "count": n} for (code, fatal), n in sorted(counts.items())]


def _file_state(s: Session, src: Source, records: str, *, written: bool = True) -> str:
    """The token a re-import compares: the source's last-import time, which every ingest of the source sets to its
    own start (one running at the same time included), and ``records`` (repo.observation_state). ``written``: the
    time was just set in this session, and is read back as the database keeps it."""
    if written:
        s.flush()
        s.refresh(src, ["last_import_at"])
    return f"{src.last_import_at}|{records}"


def _issue_dict(issue: RowIssue) -> dict[str, Any]:
    return {"line": issue.line, "code": issue.code, "reason": issue.reason, "fatal": issue.fatal, "field": issue.field}
