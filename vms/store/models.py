"""SQLAlchemy 2 typed models. The camera columns are generated from the field registry (vms.catalog.fields)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vms.catalog.fields import FIELDS, Kind

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Source(Base):
    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_import_at: Mapped[datetime | None]
    # The last snapshot import: every live observation of the source was listed by it (their last-seen).
    listed_at: Mapped[datetime | None]
    # The last whole-file import (Inventory.import_file): its file's digest (bytes plus how they are read), a token
    # of the source's stored observations right after it, and its row report (zlib JSON). A re-import whose file
    # digest and token both match reads no row and replays the report. NULL when the last import cannot be reused.
    file_digest: Mapped[str | None] = mapped_column(String(64))
    file_state: Mapped[str | None] = mapped_column(Text)
    file_report: Mapped[bytes | None] = mapped_column(LargeBinary)


def _field_column(kind: Kind, max_len: int) -> Any:
    if kind is Kind.INT:
        return BigInteger()
    if kind is Kind.FLOAT:
        return Float()
    if kind is Kind.JSON:
        return JSON()
    return String(max_len) if max_len <= 1024 else Text()


class Credential(Base):
    """A login for cameras. The secret is Fernet-encrypted; only the service layer decrypts it."""

    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    username: Mapped[str] = mapped_column(String(128))
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    scope: Mapped[str | None] = mapped_column(String(64))  # CIDR the set applies to; None = anywhere
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# The camera table is built from the registry so columns, importers and exporters never drift apart.
cameras = Table(
    "cameras",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    *(
        Column(f.name, _field_column(f.kind, f.max_len), nullable=True, index=f.identity or f.name == "name")
        for f in FIELDS
    ),
    Column("extra", JSON, nullable=True),
    Column("conflicts", JSON, nullable=True),  # {field: {source: value}} where sources disagree
    Column("region_code", String(64), nullable=True, index=True),
    Column("region_by_position", String(64), nullable=True),
    Column("region_by_code", String(64), nullable=True),
    Column("credential_id", Integer, ForeignKey("credentials.id", ondelete="SET NULL"), nullable=True),
    # The operator's labels (a JSON list of strings: "school", "ring-road"), for sweep groups; not a source's field.
    Column("tags", JSON, nullable=True),
    # Measurements, not attributes: the last time a probe reached the device and its clock offset then.
    Column("clock_offset_s", Float, nullable=True),
    Column("probed_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("removed_at", DateTime(timezone=True), nullable=True, index=True),
    # Lists filtered by status walk it in id order (migrations 0018_camera_status_index and
    # 0022_camera_list_filter_indexes: the id in the index, for PostgreSQL), so do those by use type and by owner;
    # a bounding box reads the position's. On PostgreSQL they hold the live cameras only (0024_camera_filter_partial):
    # a foreign-key check (id = $1) planned while the table was small could take one of them, and then walked the
    # whole index for each row an import wrote (100,000 cameras: 220 s instead of 20 s).
    Index("ix_cameras_status", "status", "id", postgresql_where=text("removed_at IS NULL")),
    Index("ix_cameras_use_type", "use_type", "id", postgresql_where=text("removed_at IS NULL")),
    Index("ix_cameras_owner", "owner", "id", postgresql_where=text("removed_at IS NULL")),
    Index("ix_cameras_position", "longitude", "latitude"),
)


class Observation(Base):
    """What one source says about one camera; the camera record is the merge of its observations."""

    __tablename__ = "observations"
    # Identity keys are indexed only where present (a ledger has no MAC, serial or endpoint): an import writes
    # index entries for the keys it has, not 100,000 NULLs per key kind. Matching looks keys up by equality.
    __table_args__ = (
        UniqueConstraint("source_id", "key"),
        *(
            Index(
                f"ix_observations_{c}",
                c,
                sqlite_where=text(f"{c} IS NOT NULL"),
                postgresql_where=text(f"{c} IS NOT NULL"),
            )
            for c in ("k_device_id", "k_mac", "k_serial", "k_endpoint_ref", "k_host_port")
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # JSON text written by the ingest itself: the same text is hashed for change detection, so a
    # 100,000-row import serialises each record once.
    fields: Mapped[str] = mapped_column(Text)
    extra: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(40))
    line: Mapped[int | None]
    # Identity keys (vms.catalog.domain.identity_keys), indexed for matching.
    k_device_id: Mapped[str | None] = mapped_column(String(32))
    k_mac: Mapped[str | None] = mapped_column(String(17))
    k_serial: Mapped[str | None] = mapped_column(String(255))
    k_endpoint_ref: Mapped[str | None] = mapped_column(String(255))
    k_host_port: Mapped[str | None] = mapped_column(String(96))
    # The raw digest of the row this was read from (its cells as written plus what decides how they are read:
    # header, column map, reader version), set only for a row read without any issue; a re-import recognises an
    # unchanged row by it without parsing the row. raw_spot: the stable hash of its name and position, for the
    # duplicate check of rows recognised that way; raw_issues: the row's non-fatal issues (importers.pack_issues),
    # reported again for it. NULL for formats read another way.
    raw_digest: Mapped[int | None] = mapped_column(BigInteger)
    raw_spot: Mapped[int | None] = mapped_column(BigInteger)
    raw_issues: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]


class CatalogNode(Base):
    """Non-camera catalog entries (platforms, NVRs, business groups, virtual organisations) for ParentID."""

    __tablename__ = "catalog_nodes"
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    parent_id: Mapped[str | None] = mapped_column(String(64))
    civil_code: Mapped[str | None] = mapped_column(String(12))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Region(Base):
    __tablename__ = "regions"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_code: Mapped[str | None] = mapped_column(String(64), index=True)
    level: Mapped[str] = mapped_column(String(16))
    geometry: Mapped[bytes | None] = mapped_column(LargeBinary)  # WKB, WGS-84
    source: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportRun(Base):
    __tablename__ = "import_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    counts: Mapped[dict[str, Any]]
    issues: Mapped[dict[str, Any] | None]  # {"items": [...], "truncated": n}


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None]
    address: Mapped[str | None] = mapped_column(String(255))  # from where: the client's IP, or "cli@<host>"


class DiscoveryRun(Base):
    """One `vms discover` (or scheduled sweep): what was asked, what was found, what failed and why."""

    __tablename__ = "discovery_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    params: Mapped[dict[str, Any]]
    counts: Mapped[dict[str, Any] | None]
    failures: Mapped[dict[str, Any] | None]  # {"items": [{host, port, cause, step, detail}], "truncated": n}


class DeviceLogin(Base):
    """Per-device login memory: which method worked, and the failed-login budget (never lock an account)."""

    __tablename__ = "device_logins"
    address: Mapped[str] = mapped_column(String(96), primary_key=True)  # host:port
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)  # sha256 of the key; the key is shown once
    scope: Mapped[str] = mapped_column(String(16), default="read")  # read < operate < admin (vms.access.apikeys)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]  # to the minute (see vms.access.apikeys.LAST_USED_RESOLUTION)


# Data-quality problems kept up to date as records change (vms.inventory.problems), so that a summary reads a
# few counters instead of checking 100,000 cameras, and one camera's problems is a lookup.
def _partial(name: str, column: str, where: str, pg_where: str | None = None) -> Index:
    """An index of only the rows that match ``where``: most cameras have no MAC, serial or parent, few are stale."""
    return Index(name, column, sqlite_where=text(where), postgresql_where=text(pg_where or where))


camera_quality = Table(
    "camera_quality",
    Base.metadata,
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    # What the record holds now, to find the cameras a change affects. device_id for every camera (a ParentID
    # also resolves to a removed camera); the rest only while the camera is live.
    Column("device_id", String(64), nullable=True),
    Column("parent_id", String(64), nullable=True),
    # Keys of the duplicate rules (the GB ID or MAC itself, else a SHA-1): cameras sharing one are duplicates.
    Column("k_id", String(40), nullable=True),
    Column("k_name_position", String(40), nullable=True),
    Column("k_mac", String(40), nullable=True),
    Column("k_serial", String(40), nullable=True),
    Column("stale", Boolean, nullable=False),  # problems to recompute
    # What the counters hold for this camera: subtracted when it is checked again.
    Column("counted", Boolean, nullable=False),
    Column("problems", Text, nullable=True),  # codes in rule order, space-separated; NULL: passes every rule
    Column("region_code", String(64), nullable=True),
    Column("sources", Text, nullable=True),  # JSON list of the source names that list it
    Column("conflicts", Boolean, nullable=False),
    *(
        _partial(f"ix_camera_quality_{c}", c, f"{c} IS NOT NULL")
        for c in ("parent_id", "k_id", "k_name_position", "k_mac", "k_serial")
    ),
    _partial("ix_camera_quality_stale", "stale", "stale = 1", "stale = true"),
)

camera_problems = Table(
    "camera_problems",
    Base.metadata,
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    Column("code", String(32), primary_key=True),
    Index("ix_camera_problems_code", "code", "camera_id"),
)

# Counters of the quality summary: dim "all" (key ""), "rule" (code), "region" (code, "" for none), "source"
# (name), "conflicts" (key ""). total cameras, passed cameras (a rule's total is the cameras it fails).
quality_tallies = Table(
    "quality_tallies",
    Base.metadata,
    Column("dim", String(16), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("total", BigInteger, nullable=False),
    Column("passed", BigInteger, nullable=False),
)

# name -> value; "fingerprint": what the stored problems were computed under (rules, governed region, regions).
quality_state = Table(
    "quality_state",
    Base.metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Text, nullable=True),
)


# Health checks (vms.health): sweeps, raw results for a window (VMS_HEALTH_RAW_DAYS), the latest result and
# status per camera, every status change, and daily figures per camera. Made by migration 0009_health.
health_sweeps = Table(
    "health_sweeps",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("stages", JSON, nullable=False),  # the stages the sweep ran, in order
    Column("camera_group", String(255), nullable=True),  # what it covered: "all", "region:3713", "tag:x", ...
    Column("counts", JSON, nullable=True),  # {"outcome": {ok: n, ...}, "cause": {stage: {cause: n}}}, at the end
)

health_results = Table(
    "health_results",
    Base.metadata,
    Column("sweep_id", Integer, ForeignKey("health_sweeps.id", ondelete="CASCADE"), primary_key=True),
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("cause", String(32), nullable=True),
    Column("clock_offset_s", Float, nullable=True),
    Column("stages", Text, nullable=False),  # JSON [[stage, ok, ms, cause, detail], ...]
    Column("details", Text, nullable=True),  # JSON of the check's findings (codec, sizes, stream URI)
    Index("ix_health_results_at", "at"),
    Index("ix_health_results_camera_id", "camera_id", "at"),
)

health_latest = Table(
    "health_latest",
    Base.metadata,
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    Column("sweep_id", Integer, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("cause", String(32), nullable=True),
    Column("clock_offset_s", Float, nullable=True),
    Column("stages", Text, nullable=False),
    Column("details", Text, nullable=True),
    # The status with hysteresis (vms.health.status.State): NULL = never known.
    Column("status", String(8), nullable=True),
    Column("since", DateTime(timezone=True), nullable=True),  # time of the event that set the status
    Column("pending", String(8), nullable=True),
    Column("streak", Integer, nullable=False, default=0),
    Index("ix_health_latest_status", "status"),
)

health_events = Table(
    "health_events",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event", String(8), nullable=False),  # ON, OFF, VLOST, DEFECT (GB/T 28181)
    Column("previous", String(8), nullable=True),  # the status before; NULL = unknown
    Column("status", String(8), nullable=False),  # the status after (VLOST is a DEFECT)
    Column("stage", String(16), nullable=True),
    Column("cause", String(32), nullable=True),
    Column("sweep_id", Integer, nullable=True),
    Index("ix_health_events_camera_id", "camera_id", "at"),
    Index("ix_health_events_at", "at"),
)

# Per camera and UTC day: checks, good checks, the seconds of closed status intervals that fell in the day (ON,
# and any known status), and the clock offsets seen. The interval still open (health_latest.since onwards) is not
# in it: the online rate adds it.
health_daily = Table(
    "health_daily",
    Base.metadata,
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("checks", Integer, nullable=False, default=0),
    Column("ok", Integer, nullable=False, default=0),
    Column("online_s", Float, nullable=False, default=0.0),
    Column("known_s", Float, nullable=False, default=0.0),
    Column("drift_n", Integer, nullable=False, default=0),
    Column("drift_min", Float, nullable=True),
    Column("drift_max", Float, nullable=True),
    Column("drift_sum", Float, nullable=True),
    Index("ix_health_daily_day", "day"),
)

# Health sweep schedules (vms.jobs.schedules), the lease that lets one scheduler process run a schedule's sweep,
# and the runs taken. Made by migration 0011_health_schedules.
health_schedules = Table(
    "health_schedules",
    Base.metadata,
    Column("name", String(64), primary_key=True),
    Column("camera_group", String(255), nullable=False),  # "all", "region:371311", "source:onvif", "tag:school"
    Column("stages", JSON, nullable=False),  # the stages its sweeps run, in order
    Column("interval_s", Integer, nullable=True),  # every N seconds, or
    Column("cron", String(255), nullable=True),  # a crontab expression (UTC); exactly one of the two is set
    Column("deadline_s", Float, nullable=True),  # sweep deadline; NULL = the time until the next run
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

# One row per schedule: who runs its sweep now and until when (epoch seconds, renewed while the sweep runs), and
# the scheduled time of the last run taken (a run time is taken once, by one process).
schedule_leases = Table(
    "schedule_leases",
    Base.metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("slot", Float, nullable=True),
)

schedule_runs = Table(
    "schedule_runs",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("schedule", String(64), nullable=False),
    Column("slot", Float, nullable=False),  # the scheduled run time (epoch seconds)
    Column("holder", String(128), nullable=False),  # the scheduler process that ran it
    Column("started_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("sweep_id", Integer, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("schedule", "slot"),
    Index("ix_schedule_runs_started_at", "started_at"),
)

# APScheduler 3's SQLAlchemyJobStore table, described here and made by the migration (not by the job store at
# start) so that both databases get it from one schema tool and two processes never race to create it.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


# Frame samples (vms.frames.store): sample sets, one row per sampled frame (its JPEG is the file
# <data_dir>/samples/<sha256[:2]>/<sha256>.jpg, shared by identical frames), and each camera's reference frame for
# the occlusion check. Made by migration 0013_frames.
sample_sets = Table(
    "sample_sets",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("created_by", String(128), nullable=False),
    Column("settings", JSON, nullable=False),  # how it samples: stages, frames, spacing, source, group/region
    Column("camera_ids", JSON, nullable=False),  # the cameras it targeted, so that it can be repeated
    Column("notes", Text, nullable=True),
)

frame_samples = Table(
    "frame_samples",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), nullable=False),
    Column("set_id", Integer, ForeignKey("sample_sets.id", ondelete="SET NULL"), nullable=True),
    Column("sweep_id", Integer, nullable=True),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    Column("source", String(16), nullable=False),  # rtsp | snapshot
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("codec", String(16), nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("bytes", Integer, nullable=False),  # the JPEG's size
    Column("sha256", String(64), nullable=False),  # the JPEG's content address (hex)
    Column("thumb", LargeBinary, nullable=True),  # small grey thumbnail for the freeze check (vms.frames.store.pack)
    Column("faults", String(255), nullable=False, default=""),  # video-quality faults, comma-separated; "" = none
    Column("metrics", JSON, nullable=True),  # the diagnosis' measurements
    Index("ix_frame_samples_camera_id", "camera_id", "taken_at"),
    Index("ix_frame_samples_set_id", "set_id"),
    Index("ix_frame_samples_sha256", "sha256"),
    Index("ix_frame_samples_taken_at", "taken_at"),
)

camera_references = Table(
    "camera_references",
    Base.metadata,
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    Column("sample_id", Integer, ForeignKey("frame_samples.id", ondelete="SET NULL"), nullable=True),
    Column("set_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("ref", LargeBinary, nullable=False),  # the reference map (vms.frames.store.pack)
    Column("width", Integer, nullable=False),  # size of the frame it was taken from
    Column("height", Integer, nullable=False),
)


# Structured-processing trials (vms.frames.trials): a run of analyzers over a sample set, and the objects they
# found, shaped like GA/T 1400 records (box as LeftTopX/Y, RightBtmX/Y in pixels of the sample). Made by
# migration 0014_trials.
trials = Table(
    "trials",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("set_id", Integer, ForeignKey("sample_sets.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False, unique=True),
    Column("started_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("analyzers", JSON, nullable=False),  # [{name, version, options}]
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("summary", JSON, nullable=True),  # the report's figures (vms.frames.report), at the end
    Column("error", Text, nullable=True),  # why it failed
    Index("ix_trials_set_id", "set_id"),
)

trial_objects = Table(
    "trial_objects",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("trial_id", Integer, ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
    Column("sample_id", Integer, ForeignKey("frame_samples.id", ondelete="CASCADE"), nullable=False),
    Column("camera_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # Person | Face | MotorVehicle | NonMotorVehicle | Motion
    Column("left_top_x", Integer, nullable=False),
    Column("left_top_y", Integer, nullable=False),
    Column("right_btm_x", Integer, nullable=False),
    Column("right_btm_y", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("analyzer", String(32), nullable=False),
    Column("analyzer_version", String(128), nullable=False),
    Column("plate_no", String(32), nullable=True),  # a MotorVehicle's plate number, where one was read
    Column("attributes", JSON, nullable=True),
    Index("ix_trial_objects_trial_id", "trial_id", "sample_id"),
    Index("ix_trial_objects_sample_id", "sample_id"),
)

# Long-running operations started through the API (vms.jobs.operations): discovery, health sweeps, frame sampling
# and trials, each run in a background thread of one API process (``runner``: host:pid), with its progress, its
# result summary or error, and who started it from where. Made by migration 0016_operations.
operations = Table(
    "operations",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # discovery | sweep | sample | trial
    Column("params", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("stage", String(32), nullable=True),  # the step the service last reported (scan, sweep, analyze, ...)
    Column("done", Integer, nullable=False, default=0),
    Column("total", Integer, nullable=False, default=0),
    Column("result", JSON, nullable=True),  # the service's summary, at the end
    Column("error", Text, nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("address", String(255), nullable=True),  # from where it was started (the client's IP)
    Column("runner", String(128), nullable=True),  # host:pid of the API process that holds it
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=True),  # the runner's last sign of life
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Index("ix_operations_status", "status"),
)


# The change feed (vms.inventory.changes): one row per create, update, removal ("remove") and status change of a
# camera, in commit order. Written only by the triggers of migration 0017_camera_changes, so every write path is
# in it; seq is never reused (rows are never deleted). gb_id: a removed camera's GB ID, for its tombstone.
camera_changes = Table(
    "camera_changes",
    Base.metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("camera_id", Integer, nullable=False),
    Column("op", String(8), nullable=False),  # create | update | remove | status
    Column("gb_id", String(64), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)


# Coverage indicators per UTC day (vms.coverage): the counts behind the intact, aggregation and data-quality pass
# rates as last read that day (the online rate has its own history in health_daily), per region code with its
# sub-regions and "" for every camera. Made by migration 0019_coverage_daily.
coverage_daily = Table(
    "coverage_daily",
    Base.metadata,
    Column("day", Date, primary_key=True),
    Column("region", String(64), primary_key=True),
    Column("registered", Integer, nullable=False),
    Column("online_now", Integer, nullable=False),
    Column("intact", Integer, nullable=False),
    Column("aggregated", Integer, nullable=False),
    Column("known", Integer, nullable=False),  # every camera a source reports: the aggregation rate's base
    Column("quality_passed", Integer, nullable=False),
    Column("quality_checked", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),  # when it was read (a later reading that day replaces it)
)


# The covered areas as last built (vms.coverage), so that a new process reads them instead of building them again
# (seconds of CPU at 100,000 cameras). A row stands while its fingerprints match what the cameras, the region's
# polygon and the view defaults are now; only the regions whose cameras changed are built again. Made by migration
# 0023_coverage_kept.
coverage_areas = Table(
    "coverage_areas",
    Base.metadata,
    Column("region", String(64), primary_key=True),
    Column("geometry_fp", String(64), nullable=False),  # digest: the views, status left out, defaults, polygon
    Column("cameras", Integer, nullable=False),  # with a position
    Column("covered_km2", Float, nullable=False),
    Column("covered", LargeBinary, nullable=True),  # WKB, local projection, clipped to the region
    Column("views", LargeBinary, nullable=False),  # the cameras' ids and views (local metres), for the working union
    Column("working_fp", String(64), nullable=True),  # digest with status: what the working figures were built at
    Column("working", Integer, nullable=True),
    Column("working_km2", Float, nullable=True),
    Column("working_geom", LargeBinary, nullable=True),  # WKB
    Column("seconds", Float, nullable=False),  # the build's time
    Column("built_at", DateTime(timezone=True), nullable=False),
)

# The online seconds of each closed UTC day by region (vms.health's daily figures summed by the cameras' region
# when the day is rolled up; "" for no region), so that the indicators read a row per region and day instead of a
# row per camera and day. health_daily_marks counts the writes to each day after it closed: a roll-up stands
# while the count it was made at is the count now. Made by migration 0023_coverage_kept.
health_region_daily = Table(
    "health_region_daily",
    Base.metadata,
    Column("day", Date, primary_key=True),
    Column("region", String(64), primary_key=True),
    Column("online_s", Float, nullable=False),
    Column("known_s", Float, nullable=False),
    Column("cameras", Integer, nullable=False),
)
health_daily_marks = Table(
    "health_daily_marks",
    Base.metadata,
    Column("day", Date, primary_key=True),
    Column("writes", Integer, nullable=False),  # writes to the day after it closed
    Column("rolled", Integer, nullable=True),  # the value of writes the roll-up was made at (NULL: none)
    Column("rolled_at", DateTime(timezone=True), nullable=True),
)


# GB/T 28181 devices and lower platforms that register to vms (vms.gb28181): the registry, the keepalive state
# (last_seen persists: a restart recomputes each offline deadline from it) and the last catalog answer. Made by
# migration 0020_gb28181.
gb_devices = Table(
    "gb_devices",
    Base.metadata,
    Column("device_id", String(20), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("domain", String(64), nullable=True),
    Column("transport", String(8), nullable=True),  # udp | tcp
    Column("host", String(64), nullable=True),  # where the REGISTER really came from (Via received / socket peer)
    Column("port", Integer, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("registered_at", DateTime(timezone=True), nullable=True),
    Column("last_seen", DateTime(timezone=True), nullable=True),  # any REGISTER or Keepalive
    Column("keepalive_interval_s", Float, nullable=True),
    Column("keepalive_count", Integer, nullable=True),
    Column("offline_deadline", DateTime(timezone=True), nullable=True),
    Column("online", Boolean, nullable=False, default=False),
    Column("catalog_at", DateTime(timezone=True), nullable=True),
    Column("catalog_items", Integer, nullable=True),
    Column("catalog_complete", Boolean, nullable=True),
    # a Catalog query asked for on demand (vms.gb28181.devices.request_catalog), until the SIP server takes it;
    # why the last one taken failed (NULL when it did not)
    Column("catalog_requested_at", DateTime(timezone=True), nullable=True),
    Column("catalog_error", String(255), nullable=True),
    Column("user_agent", String(255), nullable=True),
    # the camera record when the device itself is a camera (it registers directly, not through an NVR)
    Column("camera_id", Integer, ForeignKey("cameras.id", ondelete="SET NULL"), nullable=True),
)

# Schema the models do not describe, made by migration 0004_camera_search: the SQLite FTS5 search table over
# the cameras (and its shadow tables), the PostgreSQL trigram index (an expression index).
SEARCH_TABLE = "camera_search"
SEARCH_INDEX = "ix_cameras_search"
# and by 0017_camera_changes on PostgreSQL: a transaction's changes until its commit numbers them
CHANGE_FEED_STAGING = frozenset({"camera_changes_pending", "camera_changes_flush"})


def described_by_models(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic's ``include_name``: False for what the migrations make beside the models (the search index)."""
    if name is None:
        return True
    if type_ == "table" and name in CHANGE_FEED_STAGING:
        return False
    return not ((type_ == "table" and name.startswith(SEARCH_TABLE)) or (type_ == "index" and name == SEARCH_INDEX))
