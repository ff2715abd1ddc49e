"""A first import checks each new record before reading it back: stored_form gives the values the rules read in the
type the database returns them in (its columns' types), so the check equals a check of the stored record."""

from __future__ import annotations

from vms.inventory.problems import stored_form


def test_values_take_their_columns_types() -> None:
    rec = {"longitude": 118, "latitude": "34.9", "record_save_days": 30.0, "point_type": 1, "name": "东门", "x": 5}
    got = stored_form(rec)
    expected = {"longitude": 118.0, "latitude": 34.9, "record_save_days": 30, "point_type": "1", "name": "东门", "x": 5}
    assert got == expected
    assert type(got["longitude"]) is float and type(got["record_save_days"]) is int and got is not rec
    assert rec["longitude"] == 118 and type(rec["longitude"]) is int  # the record written is left as it is


def test_values_a_type_cannot_hold_stay_as_they_are() -> None:
    got = stored_form({"record_save_days": 7.5, "longitude": "east", "latitude": None})
    assert got == {"record_save_days": 7.5, "longitude": "east", "latitude": None}
