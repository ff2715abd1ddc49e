"""Health sweep schedules: what to check, over which cameras, how often; and the lease that lets exactly one
scheduler process run each scheduled sweep.

A schedule (table ``health_schedules``) names a camera group (``all``, ``region:CODE``, ``source:NAME``,
``tag:TAG``), the stages its sweeps run, an interval in seconds or a crontab expression (UTC), and an optional sweep
deadline (default: the time until its next run). Adding, replacing and removing one is audited. When no schedule is
configured at all, a built-in one (``default``: the ONVIF stages of every camera every
``VMS_HEALTH_DEFAULT_SCHEDULE_S`` seconds, 300 by default; 0 turns it off) stands in.

Lease (table ``schedule_leases``, a row per schedule): a scheduler process takes the run of a schedule at its
scheduled time (the *slot*) with one atomic ``UPDATE ... WHERE (free OR expired OR holder = me) AND slot < this
slot``, renews it while the sweep runs and releases it at the end. A slot is therefore taken at most once, by one
process, and a sweep still running elsewhere (its lease renewed) is never started again beside itself. A process
that dies mid-sweep holds the lease until it expires (``LEASE_TTL_S``); the slot it took is not re-run (never
twice, rather than at least once), the next one runs. Each taken slot is a row of ``schedule_runs`` (unique per
schedule and slot), which ``vms schedules list`` shows.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from vms.errors import Conflict, NotFound, ValidationFailed
from vms.store import repository as repo
from vms.store.models import apscheduler_jobs, health_schedules, schedule_leases, schedule_runs

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from sqlalchemy.orm import Session

    from vms.inventory.service import Inventory

__all__ = [
    "DEFAULT_NAME",
    "LEASE_TTL_S",
    "Schedule",
    "add_schedule",
    "claim",
    "effective_schedules",
    "list_schedules",
    "make_schedule",
    "release",
    "remove_schedule",
    "renew",
]

DEFAULT_NAME: Final = "default"
DEFAULT_STAGES: Final = ("tcp", "onvif", "login", "stream")  # the ONVIF stages
LEASE_TTL_S: Final = 60.0  # a lease not renewed for this long is free again (its holder died)
RUNS_KEPT_DAYS: Final = 30
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Interval triggers are anchored at this instant for the built-in schedule, so that every process computes the
# same run times for it.
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    group: str = "all"
    stages: tuple[str, ...] = DEFAULT_STAGES
    interval_s: int | None = None
    cron: str | None = None
    deadline_s: float | None = None
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None
    builtin: bool = field(default=False, compare=False)

    @property
    def every(self) -> str:
        return f"every {self.interval_s} s" if self.interval_s is not None else f"cron {self.cron}"

    def anchor(self) -> datetime:
        """When its run times start: the last change (every process computes the same run times)."""
        return _aware(self.updated_at) or _EPOCH

    def trigger(self) -> BaseTrigger:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if self.interval_s is not None:
            return IntervalTrigger(seconds=self.interval_s, start_date=self.anchor(), timezone=UTC)
        return CronTrigger.from_crontab(str(self.cron), timezone=UTC)

    def period_s(self, at: datetime | None = None) -> float:
        """Seconds from a run (at ``at``, default now) to the next one."""
        if self.interval_s is not None:
            return float(self.interval_s)
        at = at or datetime.now(UTC)
        nxt = self.trigger().get_next_fire_time(None, at + timedelta(microseconds=1))
        return max(1.0, (nxt - at).total_seconds()) if nxt is not None else 3600.0

    def version(self) -> str:
        """A fingerprint of what decides its runs: the job store's copy is replaced only when this changes (so a
        sync keeps the next run time, and runs missed while no scheduler ran are caught up, coalesced)."""
        text = json.dumps(
            [self.group, list(self.stages), self.interval_s, self.cron, self.deadline_s, self.anchor().isoformat()]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "stages": list(self.stages),
            "interval_s": self.interval_s,
            "cron": self.cron,
            "deadline_s": self.deadline_s,
            "enabled": self.enabled,
            "created_at": _aware(self.created_at),
            "updated_at": _aware(self.updated_at),
            "builtin": self.builtin,
        }


def _aware(at: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; they are stored in UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def make_schedule(
    name: str,
    *,
    group: str = "all",
    stages: tuple[str, ...] | list[str] | None = None,
    interval_s: float | None = None,
    cron: str | None = None,
    deadline_s: float | None = None,
    enabled: bool = True,
) -> Schedule:
    """A validated schedule; ValidationFailed with one line for anything no scheduler could run."""
    from vms.health.sweep import Group, SweepRequest

    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValidationFailed(
            f"schedule name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if (interval_s is None) == (cron is None or not cron.strip()):
        raise ValidationFailed("a schedule runs either every N seconds (--every) or on a cron expression (--cron)")
    if interval_s is not None:
        if not math.isfinite(interval_s) or interval_s < 1 or interval_s != int(interval_s):
            raise ValidationFailed(f"interval {interval_s!r}: a whole number of seconds, at least 1")
        if interval_s > 366 * 86400:
            raise ValidationFailed(f"interval {interval_s!r}: at most a year")
    cron_text = " ".join(cron.split()) if cron else None
    if cron_text is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            trigger = CronTrigger.from_crontab(cron_text, timezone=UTC)
        except (ValueError, TypeError) as exc:
            raise ValidationFailed(f"cron expression {cron_text!r}: {' '.join(str(exc).split())}") from exc
        if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
            raise ValidationFailed(f"cron expression {cron_text!r} never fires")
    try:
        parsed = Group.parse(group)
        req = SweepRequest(stages=tuple(stages or DEFAULT_STAGES), group=parsed, deadline_s=deadline_s)
        req.validate()
        from probes.health.check import select_stages

        ordered = select_stages(req.stages, frame=True)  # sweeps run the frame stage (vms.frames)
    except ValueError as exc:
        raise ValidationFailed(" ".join(str(exc).split())) from exc
    return Schedule(
        name=name,
        group=str(parsed),
        stages=ordered,
        interval_s=int(interval_s) if interval_s is not None else None,
        cron=cron_text,
        deadline_s=float(deadline_s) if deadline_s is not None else None,
        enabled=enabled,
    )


def _from_row(row: Any) -> Schedule:
    stages = row.stages
    if isinstance(stages, str):
        stages = json.loads(stages)
    return Schedule(
        name=row.name,
        group=row.camera_group,
        stages=tuple(str(s) for s in stages),
        interval_s=row.interval_s,
        cron=row.cron,
        deadline_s=row.deadline_s,
        enabled=bool(row.enabled),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def configured(session: Session) -> list[Schedule]:
    return [_from_row(r) for r in session.execute(select(health_schedules).order_by(health_schedules.c.name))]


def builtin_default(default_s: int) -> Schedule | None:
    if default_s <= 0:
        return None
    return Schedule(name=DEFAULT_NAME, interval_s=int(default_s), builtin=True)


def effective_schedules(inv: Inventory) -> list[Schedule]:
    """The configured schedules; when there is none at all, the built-in default (unless turned off)."""
    with inv.session(write=False) as s:
        rows = configured(s)
    if rows:
        return rows
    default = builtin_default(int(getattr(inv.settings, "health_default_schedule_s", 300)))
    return [default] if default is not None else []


def add_schedule(inv: Inventory, schedule: Schedule, *, actor: str, replace: bool = False) -> Schedule:
    now = datetime.now(UTC)
    values = {
        "camera_group": schedule.group,
        "stages": list(schedule.stages),
        "interval_s": schedule.interval_s,
        "cron": schedule.cron,
        "deadline_s": schedule.deadline_s,
        "enabled": schedule.enabled,
        "updated_at": now,
    }
    with inv.session() as s:
        exists = s.scalar(select(health_schedules.c.name).where(health_schedules.c.name == schedule.name))
        if exists is not None and not replace:
            raise Conflict(f"a schedule named {schedule.name!r} exists (--replace to change it)")
        if exists is not None:
            s.execute(update(health_schedules).where(health_schedules.c.name == schedule.name).values(**values))
        else:
            s.execute(insert(health_schedules).values(name=schedule.name, created_at=now, **values))
        repo.audit(
            s,
            actor=actor,
            action="schedule.replace" if exists is not None else "schedule.add",
            target=schedule.name,
            details={k: v for k, v in values.items() if k != "updated_at"},
        )
        row = s.execute(select(health_schedules).where(health_schedules.c.name == schedule.name)).one()
    return _from_row(row)


def remove_schedule(inv: Inventory, name: str, *, actor: str) -> None:
    with inv.session() as s:
        gone = s.connection().execute(delete(health_schedules).where(health_schedules.c.name == name)).rowcount
        if not gone:
            raise NotFound(f"no schedule named {name!r} (vms schedules list)")
        repo.audit(s, actor=actor, action="schedule.remove", target=name)


def list_schedules(inv: Inventory) -> list[dict[str, Any]]:
    """Every schedule in force (the built-in default when none is configured) with its last run and next run."""
    items = [s.to_dict() for s in effective_schedules(inv)]
    with inv.session(write=False) as s:
        for item in items:
            last = s.execute(
                select(schedule_runs)
                .where(schedule_runs.c.schedule == item["name"])
                .order_by(schedule_runs.c.slot.desc())
                .limit(1)
            ).first()
            item["last_run"] = (
                {
                    "at": datetime.fromtimestamp(last.slot, UTC),
                    "started_at": _aware(last.started_at),
                    "finished_at": _aware(last.finished_at),
                    "holder": last.holder,
                    "sweep_id": last.sweep_id,
                    "error": last.error,
                }
                if last is not None
                else None
            )
            nxt = s.scalar(
                select(apscheduler_jobs.c.next_run_time).where(apscheduler_jobs.c.id == job_id(item["name"]))
            )
            item["next_run"] = datetime.fromtimestamp(nxt, UTC) if nxt is not None and item["enabled"] else None
    return items


def job_id(name: str) -> str:
    return f"schedule:{name}"


# --- lease ---------------------------------------------------------------------------------------------------


def claim(inv: Inventory, name: str, holder: str, slot: float, *, ttl: float = LEASE_TTL_S) -> bool:
    """Take the run of schedule ``name`` at ``slot`` (epoch seconds) for ``holder``: True for exactly one caller
    per slot, and only while no other holder's lease is live. One atomic UPDATE decides."""
    now = time.time()
    lease = schedule_leases.c
    with inv.session() as s:
        _ensure_lease_row(s, name)
        take = (
            update(schedule_leases)
            .where(
                lease.name == name,
                or_(lease.holder.is_(None), lease.expires_at < now, lease.holder == holder),
                or_(lease.slot.is_(None), lease.slot < slot),
            )
            .values(holder=holder, expires_at=now + ttl, slot=slot)
        )
        taken = s.connection().execute(take).rowcount
    return taken == 1


def _ensure_lease_row(s: Session, name: str) -> None:
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(schedule_leases).values(name=name).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(sqlite_insert(schedule_leases).values(name=name).on_conflict_do_nothing())
    elif s.scalar(select(schedule_leases.c.name).where(schedule_leases.c.name == name)) is None:
        s.execute(insert(schedule_leases).values(name=name))


def renew(inv: Inventory, name: str, holder: str, *, ttl: float = LEASE_TTL_S) -> bool:
    """Extend a held lease; False when it is no longer ours (it expired and another process took it)."""
    with inv.session() as s:
        extend = (
            update(schedule_leases)
            .where(schedule_leases.c.name == name, schedule_leases.c.holder == holder)
            .values(expires_at=time.time() + ttl)
        )
        n = s.connection().execute(extend).rowcount
    return n == 1


def release(inv: Inventory, name: str, holder: str) -> None:
    with inv.session() as s:
        s.execute(
            update(schedule_leases)
            .where(schedule_leases.c.name == name, schedule_leases.c.holder == holder)
            .values(holder=None, expires_at=None)
        )


def start_run(inv: Inventory, name: str, holder: str, slot: float) -> int | None:
    """Record a taken slot; None if that slot was already run (a second guard beside the lease)."""
    try:
        with inv.session() as s:
            run_id = s.execute(
                insert(schedule_runs)
                .values(schedule=name, slot=slot, holder=holder, started_at=datetime.now(UTC))
                .returning(schedule_runs.c.id)
            ).scalar_one()
            s.execute(
                delete(schedule_runs).where(
                    schedule_runs.c.started_at < datetime.now(UTC) - timedelta(days=RUNS_KEPT_DAYS)
                )
            )
    except IntegrityError:
        return None
    return int(run_id)


def finish_run(inv: Inventory, run_id: int, *, sweep_id: int | None, error: str | None) -> None:
    with inv.session() as s:
        s.execute(
            update(schedule_runs)
            .where(schedule_runs.c.id == run_id)
            .values(finished_at=datetime.now(UTC), sweep_id=sweep_id, error=error)
        )
