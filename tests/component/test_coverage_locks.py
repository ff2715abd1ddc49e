"""Coverage statistics do not queue behind each other: a summary (and its ETag) answers while the covered area is
being built or the indicators computed (at 100,000 cameras those take seconds; a summary alone, a fraction)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vms.coverage.service import Coverage


@pytest.fixture
def hk(inventory, test_data):
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    return inventory


def _blocked(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, threading.Event]:
    """Make Coverage.<name> wait (inside) until released: (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    original = getattr(Coverage, name)

    def slow(self: Coverage, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Coverage, name, slow)
    return entered, release


@pytest.mark.parametrize(("busy", "call"), [("_union", "area"), ("_indicators", "indicators")])
def test_summary_answers_while_area_or_indicators_are_computed(hk, monkeypatch, busy, call):
    entered, release = _blocked(monkeypatch, busy)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            getattr(Coverage(hk), call)()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert entered.wait(30), f"{call} did not start"
        done = threading.Event()
        result: dict[str, Any] = {}

        def ask() -> None:
            cov = Coverage(hk)
            cov.version()
            result.update(cov.summary())
            done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert done.wait(10), f"the summary waited for {call}"
        assert result["cameras"] > 0
    finally:
        release.set()
        worker.join(60)
    assert not errors
    expected = Coverage(hk).summary()
    assert expected["cameras"] == result["cameras"]
