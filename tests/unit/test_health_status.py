"""The status state machine: hysteresis, unknown, deadline, events (vms.health.status)."""

from __future__ import annotations

import pytest

from vms.health.status import Change, State, step
from vms.settings import Settings


def run(outcomes, *, state=State(), fail=3, recover=2, cause=None, stage="onvif"):
    """Statuses after each result, and the changes made."""
    statuses, changes = [], []
    for outcome in outcomes:
        state, change = step(state, outcome, stage=stage, cause=cause, fail_count=fail, recover_count=recover)
        statuses.append(state.status)
        if change is not None:
            changes.append(change)
    return statuses, changes


def test_from_unknown_the_first_result_sets_the_status_at_once():
    for outcome, status in (("ok", "ON"), ("off", "OFF"), ("defect", "DEFECT")):
        statuses, changes = run([outcome])
        assert statuses == [status]
        assert changes == [Change(None, status, status)]


def test_leaving_on_takes_n_consecutive_failures_and_returning_takes_m_successes():
    statuses, changes = run(["ok", "off", "off", "off", "ok", "ok"], fail=3, recover=2)
    assert statuses == ["ON", "ON", "ON", "OFF", "OFF", "ON"]
    assert [(c.previous, c.status, c.event) for c in changes] == [
        (None, "ON", "ON"),
        ("ON", "OFF", "OFF"),
        ("OFF", "ON", "ON"),
    ]


def test_a_device_that_fails_every_other_check_does_not_change_status():
    statuses, changes = run(["ok"] + ["off", "ok"] * 50)
    assert set(statuses) == {"ON"} and len(changes) == 1
    # ...nor from OFF: a good check between failures never makes two in a row
    statuses, changes = run(["off"] + ["ok", "off"] * 50)
    assert set(statuses) == {"OFF"} and len(changes) == 1
    # ...nor a camera that is DEFECT half the time
    statuses, changes = run(["ok"] + ["defect", "ok"] * 50)
    assert set(statuses) == {"ON"} and len(changes) == 1


def test_off_and_defect_failures_count_together_when_leaving_on_and_the_last_decides():
    statuses, changes = run(["ok", "off", "defect", "off"])
    assert statuses[-1] == "OFF"
    statuses, changes = run(["ok", "off", "off", "defect"])
    assert statuses[-1] == "DEFECT" and changes[-1].event == "DEFECT"


def test_between_off_and_defect_takes_n_of_the_other_kind():
    statuses, _ = run(["off", "defect", "defect", "off", "defect", "defect", "defect"], fail=3)
    assert statuses == ["OFF", "OFF", "OFF", "OFF", "OFF", "OFF", "DEFECT"]


def test_a_result_equal_to_the_status_breaks_a_run():
    statuses, _ = run(["ok", "off", "off", "ok", "off", "off", "ok"], fail=3)
    assert set(statuses) == {"ON"}


def test_deadline_changes_nothing_not_even_a_run():
    state = State("ON", "OFF", 2)
    new, change = step(state, "deadline", fail_count=3, recover_count=2)
    assert (new, change) == (state, None)
    new, change = step(State(), "deadline")
    assert (new, change) == (State(), None)
    statuses, _ = run(["ok", "off", "off", "deadline", "deadline", "off"], fail=3)
    assert statuses[-1] == "OFF"


def test_video_loss_is_vlost_and_a_status_of_defect():
    _, changes = run(["ok", "defect"], fail=1, cause="rtsp_timeout", stage="rtsp")
    assert changes[-1] == Change("ON", "DEFECT", "VLOST")
    _, changes = run(["ok", "defect"], fail=1, cause="auth", stage="login")
    assert changes[-1] == Change("ON", "DEFECT", "DEFECT")
    _, changes = run(["ok", "defect"], fail=1, cause="snapshot_not_jpeg", stage="snapshot")
    assert changes[-1].event == "DEFECT"


@pytest.mark.parametrize(("fail", "recover"), [(1, 1), (2, 5), (5, 1)])
def test_counts_are_configurable(fail, recover):
    statuses, _ = run(["ok"] + ["off"] * fail, fail=fail, recover=recover)
    assert statuses[-2:] == ["ON", "OFF"]
    assert statuses.index("OFF") == fail
    statuses, _ = run(["off"] + ["ok"] * recover, fail=fail, recover=recover)
    assert statuses.index("ON") == recover


def test_settings_hold_the_counts(monkeypatch):
    defaults = Settings(_env_file=None)
    assert (defaults.health_fail_count, defaults.health_recover_count, defaults.health_raw_days) == (3, 2, 7.0)
    monkeypatch.setenv("VMS_HEALTH_FAIL_COUNT", "5")
    monkeypatch.setenv("VMS_HEALTH_RECOVER_COUNT", "4")
    monkeypatch.setenv("VMS_HEALTH_RAW_DAYS", "2")
    s = Settings(_env_file=None)
    assert (s.health_fail_count, s.health_recover_count, s.health_raw_days) == (5, 4, 2.0)
    monkeypatch.setenv("VMS_HEALTH_FAIL_COUNT", "0")
    with pytest.raises(ValueError, match="health_fail_count"):
        Settings(_env_file=None)
