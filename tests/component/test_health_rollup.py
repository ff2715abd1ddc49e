"""The online seconds of closed days by region (vms.health.rollup, issue 10's cold statistics): a read rolls the closed
days up once and reuses them; a status change that closes an interval spanning past days counts its writes and keeps
the roll-up exact; the default period is whole UTC days; a period with partial days still equals the camera-by-camera
figure; a database that cannot be written (locked, read-only) still answers. SQLite and PostgreSQL (the inventory
fixture)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from tests.component.test_coverage_online_sums import _result
from vms.coverage.service import Coverage
from vms.health import rollup
from vms.health.service import Health
from vms.inventory.service import Inventory
from vms.store.db import make_engine
from vms.store.models import cameras, health_daily_marks, health_region_daily

T0 = dt.datetime(2026, 11, 17, 6, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 24, 15, 30, tzinfo=dt.UTC)  # days up to the 23rd are closed and settled


@pytest.fixture
def hk(inventory, test_data):
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    return inventory


def _picked(inv: Inventory) -> list[tuple[int, str]]:
    with inv.engine.connect() as conn:
        rows = conn.execute(
            select(cameras.c.id, cameras.c.region_code).where(cameras.c.region_code.is_not(None)).order_by(cameras.c.id)
        ).all()
    return [(int(cid), str(code)) for cid, code in rows[:40]]


def _history(inv: Inventory, picked: list[tuple[int, str]]) -> Health:
    """Sweeps over a week: most cameras stay ON from T0, some flip back and forth (whole seconds: exact sums)."""
    health = Health(inv)
    hours = (0, 1, 2, 30, 31, 32, 80, 81, 82, 130, 131, 150, 151, 170, 171)
    for k, h in enumerate(hours):
        at = T0 + dt.timedelta(hours=h)
        sweep = health.start_sweep(["tcp"], "all", at=at)
        results = [
            _result(cid, at, True if i % 4 == 0 else (k // 3 + i) % 2 == 0) for i, (cid, _code) in enumerate(picked)
        ]
        health.record(results, sweep)
        health.finish_sweep(sweep)
    return health


def _fail(health: Health, cid: int, at: dt.datetime) -> None:
    """Failed checks of one camera from ``at``, a minute apart, until it goes OFF."""
    for k in range(health.settings.health_fail_count):
        when = at + dt.timedelta(minutes=k)
        sweep = health.start_sweep(["tcp"], "all", at=when)
        health.record([_result(cid, when, False)], sweep)
        health.finish_sweep(sweep)


def _fresh(cov: Coverage) -> Coverage:
    cov._state.indicators.clear()  # the per-process cache: the next call computes again
    return cov


def _marks(inv: Inventory) -> dict[dt.date, tuple[int, int | None]]:
    m = health_daily_marks.c
    with inv.engine.connect() as conn:
        return {
            rollup.as_date(d): (int(w), None if r is None else int(r))
            for d, w, r in conn.execute(select(m.day, m.writes, m.rolled))
        }


def _region_rows(inv: Inventory) -> dict[tuple[dt.date, str], tuple[float, float]]:
    r = health_region_daily.c
    with inv.engine.connect() as conn:
        return {
            (rollup.as_date(d), code): (float(on), float(known))
            for d, code, on, known in conn.execute(select(r.day, r.region, r.online_s, r.known_s))
        }


def _per_code(health: Health, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> dict[str | None, list[float]]:
    """Health.online_by_camera summed by the cameras' region: the reference, camera by camera."""
    with health.inventory.engine.connect() as conn:
        region = dict(conn.execute(select(cameras.c.id, cameras.c.region_code)).all())
    out: dict[str | None, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for cid, rate in health.online_by_camera(start, end, now=now).items():
        out[region.get(cid)][0] += rate.online_s
        out[region.get(cid)][1] += rate.known_s
    return out


def _assert_exact(cov: Coverage, health: Health, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> None:
    got = cov._online_by_code(start, end, now)
    want = _per_code(health, start, end, now)
    assert {c for c, v in got.items() if v[1]} == {c for c, v in want.items() if v[1]}
    for code, (on, known) in want.items():
        assert got[code][0] == pytest.approx(on, rel=1e-12, abs=1e-6), (code, start, end)
        assert got[code][1] == pytest.approx(known, rel=1e-12, abs=1e-6), (code, start, end)


def _assert_figures(cov: Coverage, health: Health, now: dt.datetime, codes: list[str]) -> dict[str, Any]:
    ind = _fresh(cov).indicators(now=now)
    start = dt.datetime.fromisoformat(ind["from"])
    ref = health.online_rate(start, now, now=now)
    assert ref.known_s > 0 and ref.online_s < ref.known_s
    assert ind["online_rate"] == pytest.approx(ref.rate, abs=1e-6)
    by = {r["region"]: r for r in ind["by_region"]}
    for code in codes:
        want = health.online_rate(start, now, region=code, now=now)
        assert by[code]["online_rate"] == pytest.approx(want.rate, abs=1e-6), code
    for day in ind["series"]:
        lo = dt.datetime.fromisoformat(day["day"]).replace(tzinfo=dt.UTC)
        want = health.online_rate(lo, lo + dt.timedelta(days=1), now=now)
        assert day["online_rate"] == (None if not want.known_s else pytest.approx(want.rate, abs=1e-6)), day
        assert day["known_h"] == round(want.known_s / 3600, 3), day
    _assert_exact(cov, health, start, now, now)
    return ind


def test_a_read_rolls_the_closed_days_up_once_and_reuses_them(hk, monkeypatch):
    picked = _picked(hk)
    health = _history(hk, picked)
    codes = sorted({code for _cid, code in picked})
    cov = Coverage(hk)
    ind = _assert_figures(cov, health, NOW, codes)
    # the default period: 7 closed days and today so far; the closed ones (settled an hour after their end) rolled
    closed = [NOW.date() - dt.timedelta(days=i) for i in range(1, 8)]
    assert [d["day"] for d in ind["series"]] == [d.isoformat() for d in sorted(closed)] + [NOW.date().isoformat()]
    marks = _marks(hk)
    for day in closed:
        assert marks[day][1] == marks[day][0], day  # stands
    assert NOW.date() not in marks or marks[NOW.date()][1] is None  # today is never rolled up
    rows = _region_rows(hk)
    assert {code for (_day, code) in rows} <= set(codes)
    # the next read sums no closed day again: only today, live
    summed: list[list[dt.date]] = []
    real = rollup._sum_days
    monkeypatch.setattr(rollup, "_sum_days", lambda conn, days: summed.append(sorted(days)) or real(conn, days))
    again = _fresh(cov).indicators(now=NOW)
    assert summed == [[NOW.date()]]
    assert again["online_rate"] == ind["online_rate"] and again["by_region"] == ind["by_region"]
    # a day is settled an hour after its end: at 00:30 yesterday is summed live, at 01:00 it is rolled up
    assert not rollup.settled(
        NOW.date(), dt.datetime.combine(NOW.date() + dt.timedelta(days=1), dt.time(0, 30), dt.UTC)
    )
    assert rollup.settled(NOW.date(), dt.datetime.combine(NOW.date() + dt.timedelta(days=1), dt.time(1), dt.UTC))


def test_a_status_change_closing_an_interval_over_past_days_counts_its_writes(hk):
    picked = _picked(hk)
    health = _history(hk, picked)
    codes = sorted({code for _cid, code in picked})
    cov = Coverage(hk)
    _assert_figures(cov, health, NOW, codes)
    before, rows_before = _marks(hk), _region_rows(hk)
    # camera 0 has been ON since T0 (i % 4 == 0): it goes OFF now, its ON interval closes over every past day
    later = NOW + dt.timedelta(hours=2)
    _fail(health, picked[0][0], later)
    after = _marks(hk)
    spanned = [d for d in before if T0.date() <= d < NOW.date()]
    assert spanned
    for day in spanned:
        assert after[day][0] == before[day][0] + 1, day  # the write to a closed day is counted
        assert after[day][1] == after[day][0], day  # and the roll-up kept current with it: it still stands
    rows_after = _region_rows(hk)
    code = picked[0][1]
    assert any(rows_after[(d, code)] != rows_before[(d, code)] for d in spanned if (d, code) in rows_before)
    _assert_figures(cov, health, later + dt.timedelta(minutes=10), codes)
    # a roll-up made from sums read before a write is not kept: the next read rolls that day again
    day = spanned[-1]
    with hk.engine.connect() as conn:
        stale_sums = rollup._sum_days(conn, [day])
    read_at = {day: _marks(hk)[day][0]}
    at = later + dt.timedelta(hours=1)
    _fail(health, picked[4][0], at)  # camera 4, ON since T0 too: a write to that day after the sums were read
    assert rollup._store(hk, stale_sums, read_at, at, 1.0) == 0
    assert _marks(hk)[day][0] == read_at[day] + 1
    _assert_figures(cov, health, at + dt.timedelta(minutes=10), codes)


def test_writes_to_a_day_not_rolled_up_yet_are_summed_when_it_is(hk):
    picked = _picked(hk)
    health = _history(hk, picked)
    codes = sorted({code for _cid, code in picked})
    marks = _marks(hk)
    assert marks and all(r is None for _w, r in marks.values())  # written after they closed, never rolled up
    done = rollup.roll_up(hk, now=NOW)
    assert done["rolled"] == done["kept"] == len([d for d in marks if rollup.settled(d, NOW)])
    assert rollup.roll_up(hk, now=NOW)["rolled"] == 0
    _assert_figures(Coverage(hk), health, NOW, codes)


def test_the_default_period_starts_at_a_utc_midnight(hk):
    picked = _picked(hk)
    _history(hk, picked)
    ind = Coverage(hk).indicators(now=NOW)
    start = dt.datetime.fromisoformat(ind["from"])
    days = hk.settings.coverage_online_days
    assert start == dt.datetime.combine(NOW.date(), dt.time(), dt.UTC) - dt.timedelta(days=days)
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert dt.datetime.fromisoformat(ind["to"]) == NOW
    # with an end given and no start: the days before the end's day, and that day up to the end
    end = NOW - dt.timedelta(days=2, hours=3)
    ind = Coverage(hk).indicators(end=end, now=NOW)
    assert dt.datetime.fromisoformat(ind["from"]) == dt.datetime.combine(end.date(), dt.time(), dt.UTC) - dt.timedelta(
        days=days
    )


def test_an_unaligned_period_equals_the_camera_by_camera_figure(hk):
    picked = _picked(hk)
    health = _history(hk, picked)
    cov = Coverage(hk)
    rollup.roll_up(hk, now=NOW)
    periods = [
        (T0 + dt.timedelta(hours=1, minutes=30), NOW - dt.timedelta(hours=2)),  # partial days at both ends
        (T0 + dt.timedelta(days=3, hours=1), T0 + dt.timedelta(days=3, hours=20)),  # inside one day
        (T0 + dt.timedelta(hours=7), NOW),  # to now
        (T0 - dt.timedelta(days=2), NOW + dt.timedelta(days=1)),  # aligned start before any data, end after now
        (dt.datetime.combine(T0.date(), dt.time(), dt.UTC), dt.datetime.combine(NOW.date(), dt.time(), dt.UTC)),
    ]
    for start, end in periods:
        _assert_exact(cov, health, start, end, NOW)
        ind = _fresh(cov).indicators(start=start, end=end, now=NOW)
        assert ind["online_rate"] == pytest.approx(health.online_rate(start, end, now=NOW).rate, abs=1e-6)


def _hold_write_lock(inv: Inventory, release: threading.Event, held: threading.Event) -> None:
    """Another writer holding the tables the read would write (SQLite: the database; PostgreSQL: those tables)."""
    engine = make_engine(inv.settings.url)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("LOCK TABLE health_daily_marks, health_region_daily, coverage_daily IN EXCLUSIVE MODE")
        held.set()
        release.wait(30)
        conn.exec_driver_sql("ROLLBACK")
    engine.dispose()


def test_a_locked_database_still_answers_without_keeping_the_roll_up(hk):
    picked = _picked(hk)
    health = _history(hk, picked)
    codes = sorted({code for _cid, code in picked})
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(hk, release, held))
    holder.start()
    try:
        assert held.wait(10)
        t0 = time.monotonic()
        _assert_figures(Coverage(hk), health, NOW, codes)
        assert time.monotonic() - t0 < hk.settings.db_lock_timeout  # waited briefly, not a writer's full wait
        assert all(r is None for _w, r in _marks(hk).values())  # nothing kept
    finally:
        release.set()
        holder.join()
    _assert_figures(Coverage(hk), health, NOW, codes)  # the next read keeps them
    marks = _marks(hk)
    assert all(marks[d][1] == marks[d][0] for d in marks if rollup.settled(d, NOW))


def test_a_read_only_database_still_answers(hk, tmp_path):
    picked = _picked(hk)
    health = _history(hk, picked)
    codes = sorted({code for _cid, code in picked})
    url = hk.settings.url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        undo = None
    else:
        name = url.rsplit("/", 1)[1]
        admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {name} SET default_transaction_read_only = on"))
        engine = make_engine(url)

        def undo() -> None:
            with admin.connect() as conn:
                conn.execute(text(f"ALTER DATABASE {name} RESET default_transaction_read_only"))
            admin.dispose()

    try:
        ro = Inventory(hk.settings, engine=engine)
        ro_health = Health(ro)
        _assert_figures(Coverage(ro), ro_health, NOW, codes)
        assert all(r is None for _w, r in _marks(hk).values())
    finally:
        engine.dispose()
        if undo is not None:
            undo()
    assert health is not None
