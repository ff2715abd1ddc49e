"""Scheduled jobs, registered in one place. The in-process scheduler is APScheduler 3; at city scale the
same job functions run as Celery tasks on workers."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

if TYPE_CHECKING:
    from vms.discovery.service import DiscoveryRequest
    from vms.inventory.service import Inventory

log = logging.getLogger(__name__)


def sweep_discovery(inventory: Inventory, request: DiscoveryRequest) -> None:
    """Discover, interrogate and register; failures are logged, never raised into the scheduler."""
    from vms.discovery.service import Discovery

    try:
        outcome = asyncio.run(Discovery(inventory).run(request))
    except Exception:
        log.exception("discovery sweep failed")
        return
    log.info(
        "discovery run %d: %d found, %d new, %d updated, %d unchanged, %d failed %s",
        outcome.run_id,
        outcome.found,
        outcome.new,
        outcome.updated,
        outcome.unchanged,
        outcome.failed,
        outcome.by_cause,
    )


def build_scheduler(
    inventory: Inventory, *, discovery: DiscoveryRequest | None, discovery_minutes: float
) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    if discovery is not None:
        # The first sweep starts at once, in the background: the API is up while a large range is scanned.
        if discovery_minutes > 0:
            scheduler.add_job(
                sweep_discovery,
                "interval",
                minutes=discovery_minutes,
                args=[inventory, discovery],
                id="discovery",
                name="discovery sweep",
                next_run_time=datetime.now(UTC),
            )
        else:
            scheduler.add_job(sweep_discovery, args=[inventory, discovery], id="discovery", name="discovery sweep")
    return scheduler
