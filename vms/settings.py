"""One validated settings model. Values come from VMS_* environment variables or a .env file."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vms.catalog.domain import DEFAULT_PRIORITY, SourceKind
from vms.errors import ConfigurationError


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "vms"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VMS_", env_file=".env", extra="ignore")

    environment: str = Field("development", description="development | production")
    data_dir: Path = Field(default_factory=_default_data_dir, description="SQLite file, key file, exports")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    governed_region: str = Field("371311", description="civil code of the governed region (2-8 digits)")
    source_priority: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRIORITY),
        description="source kinds or names, strongest first; the first one with a value wins a field",
    )
    column_map_file: Path | None = Field(None, description="JSON/TOML {header: field} added to the defaults")
    secret_key: SecretStr | None = Field(None, description="Fernet key for camera credentials")
    secret_key_file: Path | None = Field(None, description="file holding the Fernet key")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_open_reads: bool = Field(True, description="allow reads without an API key (writes always need one)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header values the API answers (name, name:port, *.domain or *), comma-separated; "
        "default: the localhost names when the API listens on loopback, any when it listens elsewhere",
    )
    db_lock_timeout: float = Field(
        5.0, gt=0, le=300, description="seconds a write waits for another writer before giving up (HTTP 503)"
    )
    log_level: str = "INFO"
    quality_target: float = Field(0.95, description="data-quality pass-rate target")
    max_removal_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="largest share of a source's cameras one import may remove without --allow-removals",
    )
    demo_fleet: str = Field("auto", description="auto: run the simulated fleet when no camera is configured; on; off")
    demo_fleet_size: int = Field(50, ge=1, le=10000, description="devices in the demo fleet")
    demo_fleet_host: str = Field("127.1.0.1", description="first device address of the demo fleet (loopback)")
    demo_fleet_port: int = Field(8080, description="HTTP port of the demo fleet's devices")
    # NoDecode: comma-separated in the environment (VMS_DISCOVERY_RANGES=10.1.0.0/24,10.2.0.0/24), not JSON
    discovery_ranges: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="CIDRs the scheduled sweep scans"
    )
    discovery_ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [80, 8080, 8000, 8899])
    discovery_interfaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="interface IPs for multicast probes"
    )
    discovery_interval_min: float = Field(15.0, description="minutes between scheduled discovery sweeps; 0 = off")
    allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs a device may point the prober at besides itself (discovery ranges and credential "
        "scopes are allowed too); comma-separated",
    )

    health_fail_count: int = Field(
        3, ge=1, le=100, description="consecutive failed checks before a camera that was ON leaves ON (or moves "
        "between OFF and DEFECT)"
    )
    health_recover_count: int = Field(
        2, ge=1, le=100, description="consecutive good checks before a camera is ON again"
    )
    health_raw_days: float = Field(
        7.0, ge=0, description="days raw check results are kept (latest result, events and daily figures stay)"
    )
    health_fast_path: bool = Field(
        True, description="a camera whose device the health check already knows (media service, WS-UsernameToken "
        "or no login) has its ONVIF stages checked by the fast path (same results, less CPU); false: always the "
        "general path"
    )
    health_default_schedule_s: int = Field(
        300, ge=0, description="when no sweep schedule is configured (vms schedules add), the schedulers of "
        "`vms run` and `vms scheduler` check every camera's ONVIF stages this often (seconds); 0 = off"
    )
    samples_keep_per_camera: int = Field(
        20, ge=1, description="frame samples kept per camera by `vms samples prune` (the newest; JPEG files too)"
    )
    samples_max_age_days: float = Field(
        30.0, gt=0, description="days a frame sample is kept by `vms samples prune`, however few a camera has"
    )
    # Video-quality diagnosis thresholds (vms.frames.vqd.Thresholds; DOMAIN section 5 starting values)
    vqd_signal_peak_share: float = Field(
        0.98, gt=0, le=1, description="share of pixels in one grey-level peak above which the signal is lost"
    )
    vqd_signal_std: float = Field(2.0, ge=0, description="grey std below which a frame is uniform (signal lost)")
    vqd_dark_mean: float = Field(40.0, ge=0, le=255, description="mean grey level below which a frame is too dark")
    vqd_bright_mean: float = Field(210.0, ge=0, le=255, description="mean grey level above which it is too bright")
    vqd_cast_ratio: float = Field(1.5, ge=0, description="Lab chroma offset / chroma spread above: colour cast")
    vqd_contrast_std: float = Field(25.0, ge=0, description="grey standard deviation below: low contrast")
    vqd_blur_var: float = Field(100.0, ge=0, description="Laplacian variance (at 480 px wide) below: blurred")
    vqd_freeze_diff: float = Field(
        1.0, ge=0, description="mean absolute thumbnail difference (grey levels) at or below which two samples "
        "show the same picture"
    )
    vqd_freeze_pixel: float = Field(
        16.0, ge=0, description="... and no thumbnail pixel changed by more than this (a clock overlay is live)"
    )
    vqd_freeze_samples: int = Field(10, ge=2, le=1000, description="samples in a row that must be the same: freeze")
    vqd_occlusion_share: float = Field(
        0.2, gt=0, le=1, description="share of the frame a region that lost its detail against the camera's "
        "reference must cover: occlusion"
    )
    vqd_occlusion_loss: float = Field(
        0.3, gt=0, le=1, description="a block lost its detail below this share of its reference edge energy"
    )
    vqd_noise_sigma: float = Field(0.0, ge=0, description="noise estimate (grey levels) above: noisy; 0 = off")
    vqd_stripes_ratio: float = Field(0.0, ge=0, description="periodic profile peak over its neighbourhood above: "
                                     "stripes; 0 = off")
    executor: Literal["local", "celery"] = Field(
        "local", description="where sweeps run: local (this process) or celery (`vms worker` processes)"
    )
    celery_broker: str = Field(
        "redis://127.0.0.1:6379/0", description="Celery broker and result backend (Redis) for VMS_EXECUTOR=celery"
    )
    celery_visibility_timeout: float = Field(
        3600.0, gt=0, le=7 * 86400,
        description="seconds before a shard taken by a worker that died is given to another worker (longer than "
        "any shard takes)",
    )
    celery_wait_s: float = Field(
        6 * 3600.0, gt=0, description="longest a sweep without a deadline waits for its shards on the workers"
    )
    # Covered area (vms.coverage): a camera's field of view where its record gives no angle or distance
    coverage_dome_radius_m: float = Field(
        50.0, gt=0, le=5000, description="view distance of a ball, dome or panorama camera (PTZType 1, 2, 5, 6): "
        "it covers a full circle of this radius"
    )
    coverage_bullet_angle_deg: float = Field(
        60.0, gt=0, le=360, description="horizontal field angle of a bullet camera (PTZType 3, 4, 7) that gives none"
    )
    coverage_bullet_distance_m: float = Field(
        80.0, gt=0, le=5000, description="view distance of a bullet camera (PTZType 3, 4, 7) that gives none"
    )
    coverage_default_ptz: Literal["1", "2", "3", "4", "5", "6", "7"] = Field(
        "3", description="the camera type (PTZType) assumed for a record that gives none"
    )
    coverage_online_days: float = Field(
        7.0,
        gt=0,
        le=366,
        description="whole UTC days before today the indicators' time-weighted online rate covers by default (and"
        " today so far)",
    )
    coverage_indicator_ttl_s: float = Field(
        60.0, ge=0, le=3600, description="seconds the indicators are reused while the inventory has not changed"
    )
    # GB/T 28181 access (vms.gb28181): devices and lower platforms register to vms over SIP
    gb28181_enabled: bool = Field(True, description="`vms run` starts the GB/T 28181 SIP server in-process")
    gb28181_host: str = Field("127.0.0.1", description="address the GB/T 28181 SIP server listens on (UDP and TCP)")
    gb28181_port: int = Field(5060, ge=0, le=65535, description="SIP port (UDP and TCP); 0 = any free port")
    gb28181_id: str = Field(
        "37131100002000000001", description="our SIP server ID (20 digits: civil code, 00, type 200, serial)"
    )
    gb28181_realm: str = Field("3713110000", description="digest realm / SIP domain (the 10-digit domain code)")
    gb28181_password: SecretStr | None = Field(
        None, description="domain password for every allowed device without its own credential set "
        "(a credential set named `gb28181:*` also serves)"
    )
    gb28181_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="device ID prefixes allowed to register besides the known cameras' IDs "
        "and the IDs with a credential set `gb28181:<id>`; comma-separated (e.g. 3713110000)"
    )
    gb28181_keepalive_interval_s: float = Field(
        60.0, gt=0, le=86400, description="expected seconds between a device's keepalives"
    )
    gb28181_keepalive_count: int = Field(
        3, ge=1, le=100, description="keepalives missed in a row before the device and its channels go OFF"
    )
    gb28181_catalog_interval_s: float = Field(
        3600.0, ge=0, description="seconds between scheduled Catalog queries of each registered device; 0 = off"
    )
    # GB/T 28181 cascade upward (vms.gb28181.upstream): vms registers to an upper platform as a lower platform
    gb28181_upstream_host: str | None = Field(
        None, description="the upper platform's address; set, vms registers to it (cascade upward); unset = off"
    )
    gb28181_upstream_port: int = Field(5060, ge=1, le=65535, description="the upper platform's SIP port")
    gb28181_upstream_transport: Literal["udp", "tcp"] = Field("udp", description="udp or tcp")
    gb28181_upstream_id: str = Field(
        "37000000002000000001", description="the upper platform's 20-digit SIP ID"
    )
    gb28181_upstream_domain: str | None = Field(
        None, description="the upper platform's domain / realm (default: the first 10 digits of its ID)"
    )
    gb28181_upstream_password: SecretStr | None = Field(
        None, description="our password at the upper platform (or a credential set named `gb28181-upstream`)"
    )
    gb28181_upstream_expires: int = Field(3600, ge=30, le=86400, description="registration expiry asked for (s)")
    gb28181_upstream_keepalive_s: float = Field(60.0, gt=0, le=3600, description="seconds between keepalives")
    gb28181_upstream_batch: int = Field(
        4, ge=1, le=100, description="catalog items per Response MESSAGE at most (on UDP also < 1,300 bytes each)"
    )
    gb28181_upstream_encoding: Literal["GB2312", "UTF-8"] = Field(
        "GB2312", description="the text encoding of what vms sends upward"
    )

    @field_validator("governed_region")
    @classmethod
    def _civil_code_digits(cls, value: str) -> str:
        value = value.strip()
        if value and (not value.isdigit() or len(value) not in (2, 4, 6, 8)):
            raise ValueError("governed_region must be a civil code of 2, 4, 6 or 8 digits")
        return value

    @field_validator(
        "discovery_ranges", "discovery_interfaces", "discovery_ports", "allowed_hosts", "allowed_networks",
        "gb28181_allow", mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)  # the JSON form, '["10.1.0.0/24"]', also works
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("gb28181_id", "gb28181_upstream_id")
    @classmethod
    def _gb_id(cls, value: str) -> str:
        value = value.strip()
        if not (value.isdigit() and len(value) == 20):
            raise ValueError("must be a 20-digit GB/T 28181 ID")
        return value

    @field_validator("gb28181_allow")
    @classmethod
    def _gb_prefixes(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v.isdigit() or len(v) > 20]
        if bad:
            raise ValueError(f"gb28181_allow entries must be ID prefixes of up to 20 digits, not {bad[0]!r}")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        from probes.policy import parse_network  # probes never import vms; the reverse is fine

        return [str(parse_network(v)) for v in value]  # a ValueError names the bad entry

    @field_validator("source_priority", mode="before")
    @classmethod
    def _split_priority(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @cached_property
    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'vms.sqlite3'}"

    def key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    def fernet_key(self) -> bytes:
        """The credential key: from settings, else a key file created once with owner-only permissions."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.key_file()
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ConfigurationError(
                    f"key file {path} is readable by others (mode {mode:03o}); refusing to use a secret others can "
                    f"read: run `chmod 600 {path}` (and make a new key if it may have leaked)"
                )
            return path.read_bytes().strip()
        if self.environment == "production":
            raise ConfigurationError("production needs VMS_SECRET_KEY or VMS_SECRET_KEY_FILE; refusing to invent one")
        from cryptography.fernet import Fernet

        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
            path.parent.chmod(0o700)
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key

    def priority_rank(self, source: str, kind: SourceKind) -> int:
        """Lower is stronger: the position of the source's name in the list, else of its kind."""
        order = self.source_priority
        if source in order:
            return order.index(source)
        if kind.value in order:
            return order.index(kind.value)
        return len(order)
