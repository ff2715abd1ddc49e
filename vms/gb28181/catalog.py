"""GB/T 28181 Catalog answers and notices into the inventory: an observation set of the source
``gb28181:<device id>`` (kind CATALOG), merged as a catalog file import merges (cameras; platforms, NVRs, business
groups and virtual organisations as catalog tree nodes), read by the catalog file reader
(vms.ingest.importers.read_catalog_documents: the same element map, decoding and checks).

A complete answer (SumNum items arrived) is the device's whole list: what it no longer lists is removed from its
source (an empty one only within the removal share guard: else it merges as a partial one, nothing removed). An
incomplete answer merges with snapshot=False (nothing removed). Notices: ADD/UPDATE merge their items, DEL removes
the channel from the device's source; ON/OFF/VLOST/DEFECT are statuses (the caller sends them to Health.signal).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from vms.catalog.domain import Observation, SourceKind
from vms.ingest.importers import ReadError, read_catalog_documents
from vms.inventory.ingest import RemovalRefused, ingest, observation_key, remerge
from vms.inventory.service import CAMERA_TYPES, Inventory
from vms.store import repository as repo
from vms.store.models import Observation as ObservationRow
from vms.store.models import Source, cameras

__all__ = ["CatalogMerge", "delete_channels", "merge_documents", "source_name"]

log = logging.getLogger(__name__)


def source_name(device_id: str) -> str:
    return f"gb28181:{device_id}"


@dataclass(slots=True)
class CatalogMerge:
    source: str
    cameras: int = 0  # camera items merged
    nodes: int = 0  # tree nodes (platforms, NVRs, groups) stored
    rejected: int = 0
    removed: int = 0
    snapshot: bool = False
    statuses: dict[str, list[int]] = field(default_factory=dict)  # ON/OFF/DEFECT -> camera ids, from <Status>
    channels: dict[str, int] = field(default_factory=dict)  # channel DeviceID -> camera id
    error: str | None = None


def merge_documents(
    inventory: Inventory,
    device_id: str,
    documents: Sequence[bytes],
    *,
    snapshot: bool,
    only: Collection[str] | None = None,
    at: dt.datetime | None = None,
) -> CatalogMerge:
    """Merge Catalog bodies of one device; ``only``: the channel IDs to take (a notice's ADD/UPDATE items)."""
    source = source_name(device_id)
    out = CatalogMerge(source=source, snapshot=snapshot)
    try:
        read = read_catalog_documents(documents)
    except ReadError as exc:
        out.error = str(exc)
        log.warning("gb28181: catalog of %s not read: %s", device_id, exc)
        return out
    observations: list[Observation] = []
    nodes: list[dict[str, Any]] = []
    status_of: dict[str, str] = {}
    for row in read.rows:
        if row.rejected:
            out.rejected += 1
            continue
        channel = str(row.fields.get("device_id") or "")
        if only is not None and channel not in only:
            continue
        if channel and channel[10:13] not in CAMERA_TYPES:
            nodes.append({**row.fields})
            continue
        observations.append(
            Observation(source, SourceKind.CATALOG, observation_key(row.fields, row.line), row.fields, row.extra)
        )
        status = str(row.fields.get("status") or "").upper()
        if channel and status in {"ON", "OFF", "DEFECT"}:
            status_of[channel] = status
    # A complete answer is the device's own list: what it left out is gone. An empty one is more likely a device
    # that lost its channel list for a moment (a reboot): the removal share guard then keeps them.
    share = None if observations or nodes else inventory.settings.max_removal_share
    for attempt_snapshot in (True, False) if snapshot else (False,):
        try:
            with inventory.session() as s:
                result = ingest(
                    s,
                    source=source,
                    kind=SourceKind.CATALOG,
                    observations=observations,
                    rank=inventory.rank,
                    regions=inventory.region_context(s),
                    snapshot=attempt_snapshot,
                    now=at,
                    max_removal_share=share,
                )
                if nodes:
                    repo.upsert_nodes(s, nodes, result_source_id(s, source))
                inventory.refresh_problems(s, result.camera_ids, parents={str(n["device_id"]) for n in nodes})
                keys = [f"id:{c}" for c in status_of] + [o.key for o in observations if o.key.startswith("id:")]
                by_key = repo.camera_ids_for_keys(s, source, keys)
                if result.changed or nodes:
                    repo.audit(
                        s,
                        actor=source,
                        action="ingest:gb28181",
                        target=source,
                        details={**result.counts(), "nodes": len(nodes), "snapshot": attempt_snapshot},
                    )
            out.snapshot = attempt_snapshot
            break
        except RemovalRefused as exc:
            log.warning("gb28181: %s; merged as a partial catalog instead", exc)
    out.cameras, out.nodes, out.removed = len(observations), len(nodes), result.observations_removed
    out.channels = {key[3:]: cid for key, cid in by_key.items()}
    for channel, status in status_of.items():
        if channel in out.channels:
            out.statuses.setdefault(status, []).append(out.channels[channel])
    return out


def result_source_id(session: Any, source: str) -> int:
    return repo.get_or_create_source(session, source, SourceKind.CATALOG).id


def delete_channels(inventory: Inventory, device_id: str, channels: Collection[str], *, at: dt.datetime) -> int:
    """Remove these channels from the device's source (a notice's DEL) and merge their cameras again (a camera no
    other source lists is marked removed). Returns the observations removed."""
    source = source_name(device_id)
    o = ObservationRow
    keys = [f"id:{c}" for c in channels]
    with inventory.session() as s:
        rows = s.execute(
            select(o.id, o.camera_id)
            .join(Source, Source.id == o.source_id)
            .where(Source.name == source, o.key.in_(keys), o.removed_at.is_(None))
        ).all()
        if not rows:
            return 0
        repo.mark_observations_removed(s, [r.id for r in rows], at)
        ids = {int(r.camera_id) for r in rows}
        remerge(s, ids, rank=inventory.rank, regions=inventory.region_context(s), now=at)
        inventory.refresh_problems(s, ids)
        repo.audit(s, actor=source, action="ingest:gb28181", target=source, details={"removed": len(rows)})
    return len(rows)


def channel_cameras(inventory: Inventory, device_ids: Collection[str]) -> dict[str, list[int]]:
    """The live cameras of each device: its channels (live observations of its source) and the device itself when
    it is a camera."""
    if not device_ids:
        return {}
    o = ObservationRow
    out: dict[str, list[int]] = {d: [] for d in device_ids}
    names = {source_name(d): d for d in device_ids}
    with inventory.session(write=False) as s:
        for name, cid in s.execute(
            select(Source.name, o.camera_id)
            .join(Source, Source.id == o.source_id)
            .where(Source.name.in_(list(names)), o.removed_at.is_(None))
        ):
            out[names[name]].append(int(cid))
        for dev, cid in s.execute(
            select(cameras.c.device_id, cameras.c.id).where(
                cameras.c.device_id.in_(list(device_ids)), cameras.c.removed_at.is_(None)
            )
        ):
            out[str(dev)].append(int(cid))
    return {d: sorted(set(ids)) for d, ids in out.items()}


def statuses_of(merges: Mapping[str, list[int]]) -> dict[str, list[int]]:
    return {k: sorted(set(v)) for k, v in merges.items() if v}
