"""GET /metrics: Prometheus text format (prometheus-client).

The health figures come from a collector that reads the database at each scrape (vms.health.figures), so every API
worker process of `vms serve` reports the same numbers and nothing is kept in memory between scrapes; the process's
own figures (CPU, memory, open files, garbage collection, Python version) are those of the worker that answered.
Access follows the API's read rule: open when VMS_API_OPEN_READS is on, else a read key in X-API-Key (or, for a
Prometheus ``authorization`` block, ``Authorization: Bearer KEY``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from api.deps import Caller, read_access
from vms.health.figures import health_figures
from vms.inventory.service import Inventory

__all__ = ["HealthCollector", "add_metrics", "metrics_registry"]

log = logging.getLogger(__name__)

SWEEP = ["group", "stages"]


class HealthCollector(Collector):
    """Sweeps, statuses and the online rate, read from the database when scraped."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the database (the metrics are listed at scrape time)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("vms_health_figures_up", "1 when the health figures could be read from the database")
        try:
            figures = health_figures(self.inventory)
        except SQLAlchemyError as exc:
            log.warning("metrics: health figures unavailable: %s", " ".join(str(exc).split())[:300])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        duration = GaugeMetricFamily(
            "vms_health_sweep_duration_seconds", "duration of the last finished sweep of each schedule", labels=SWEEP
        )
        finished = GaugeMetricFamily(
            "vms_health_sweep_finished_timestamp_seconds", "when the last sweep of each schedule finished",
            labels=SWEEP,
        )
        sweep_id = GaugeMetricFamily("vms_health_sweep_id", "id of the last sweep of each schedule", labels=SWEEP)
        by_outcome = GaugeMetricFamily(
            "vms_health_sweep_cameras", "cameras of the last sweep of each schedule by outcome",
            labels=[*SWEEP, "outcome"],
        )
        failures = GaugeMetricFamily(
            "vms_health_sweep_failures", "failed checks of the last sweep of each schedule by stage and cause",
            labels=[*SWEEP, "stage", "cause"],
        )
        for f in figures.sweeps:
            labels = [f.group, f.stages]
            duration.add_metric(labels, f.duration_s)
            finished.add_metric(labels, f.finished_at.timestamp())
            sweep_id.add_metric(labels, f.sweep_id)
            for outcome, n in sorted(f.outcomes.items()):
                by_outcome.add_metric([*labels, outcome], n)
            for (stage, cause), n in sorted(f.causes.items()):
                failures.add_metric([*labels, stage, cause], n)
        yield from (duration, finished, sweep_id, by_outcome, failures)

        statuses = GaugeMetricFamily(
            "vms_health_cameras", "current cameras by health status (unknown: never checked)", labels=["status"]
        )
        for status, n in figures.cameras_by_status.items():
            statuses.add_metric([status], n)
        yield statuses

        rate = figures.online_24h
        window = ["24h"]
        online = GaugeMetricFamily(
            "vms_health_online_ratio",
            "time-weighted online rate over every camera (time ON / time with a known status)",
            labels=["window"],
        )
        if rate.rate is not None:
            online.add_metric(window, rate.rate)
        online_s = GaugeMetricFamily(
            "vms_health_online_seconds", "camera-seconds with status ON in the window", labels=["window"]
        )
        online_s.add_metric(window, rate.online_s)
        known_s = GaugeMetricFamily(
            "vms_health_known_seconds", "camera-seconds with a known status in the window", labels=["window"]
        )
        known_s.add_metric(window, rate.known_s)
        known_cameras = GaugeMetricFamily(
            "vms_health_known_cameras", "cameras with a known status at some time in the window", labels=["window"]
        )
        known_cameras.add_metric(window, rate.cameras)
        yield from (online, online_s, known_s, known_cameras)


def metrics_registry(inventory: Inventory) -> CollectorRegistry:
    """A registry of this app's own (several apps in one process never share or clash): the health collector and
    the process's default collectors."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(HealthCollector(inventory))
    return registry


async def metrics_reader(
    request: Request,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    """The API's read rule; a key may also come as ``Authorization: Bearer KEY`` (Prometheus' own way to send one)."""
    if x_api_key is None and authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            x_api_key = token.strip()
    return await read_access(request, x_api_key)


def add_metrics(app: FastAPI, inventory: Inventory) -> None:
    registry = metrics_registry(inventory)

    @app.get("/metrics", dependencies=[Depends(metrics_reader)], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
