"""GB/T 28181 cascade upward: vms registers to an upper-level platform (VMS_GB28181_UPSTREAM_*) and answers its
Catalog queries with the inventory (probes.gb28181.upstream.GbUpstream does the SIP).

We register as VMS_GB28181_ID in domain VMS_GB28181_REALM; the password is VMS_GB28181_UPSTREAM_PASSWORD or the
credential set named ``gb28181-upstream`` in the encrypted credential store. The catalog is every camera with a
GB/T 28181 ID, its standard Catalog fields as the catalog XML export writes them (vms.ingest.exporters), without
the ``vms:Ext`` block: no extra column and no camera credential ever goes upward.

The registration's state is written to ``<data dir>/gb28181-upstream.json`` while it runs (`vms gb28181 upstream`
reads it): the state, when registered, the last keepalive answered, the last error and the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from probes.gb28181.upstream import GbUpstream, UpstreamConfig, UpstreamStatus
from vms.catalog.fields import FIELD_NAMES
from vms.ingest.exporters import catalog_item_text
from vms.inventory.credentials import Cipher
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo
from vms.store.models import Credential

__all__ = ["UPSTREAM_CREDENTIAL", "Upstream", "catalog_items", "read_status", "status_path", "upstream_config"]

log = logging.getLogger(__name__)

UPSTREAM_CREDENTIAL = "gb28181-upstream"
STATUS_FILE = "gb28181-upstream.json"
REPORT_S = 1.0


def status_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / STATUS_FILE


def _password(inventory: Inventory) -> str:
    settings = inventory.settings
    if settings.gb28181_upstream_password is not None:
        return settings.gb28181_upstream_password.get_secret_value()
    with inventory.session(write=False) as s:
        cred = s.scalars(select(Credential).where(Credential.name == UPSTREAM_CREDENTIAL)).first()
        if cred is not None:
            return Cipher(settings.fernet_key()).decrypt(cred.secret)
    log.warning("GB/T 28181 upstream: no password (VMS_GB28181_UPSTREAM_PASSWORD or a credential set %r)",
                UPSTREAM_CREDENTIAL)
    return ""


def upstream_config(inventory: Inventory, *, local_host: str | None = None) -> UpstreamConfig | None:
    """The registration VMS_GB28181_UPSTREAM_* describes, or None when no upstream host is set."""
    settings = inventory.settings
    host = (settings.gb28181_upstream_host or "").strip()
    if not host:
        return None
    upstream_id = settings.gb28181_upstream_id
    return UpstreamConfig(
        local_id=settings.gb28181_id,
        local_domain=settings.gb28181_realm,
        upstream_id=upstream_id,
        upstream_domain=(settings.gb28181_upstream_domain or "").strip() or upstream_id[:10],
        host=host,
        port=settings.gb28181_upstream_port,
        transport=settings.gb28181_upstream_transport,
        password=_password(inventory),
        local_host=local_host or settings.gb28181_host,
        expires=settings.gb28181_upstream_expires,
        keepalive_interval_s=settings.gb28181_upstream_keepalive_s,
        batch=settings.gb28181_upstream_batch,
        encoding=settings.gb28181_upstream_encoding,
        name=f"vms {settings.gb28181_id}",
    )


def catalog_items(inventory: Inventory) -> list[str]:
    """The inventory as Catalog ``<Item>`` texts: every camera with a GB/T 28181 ID, in ID order of the store."""
    with inventory.session(write=False) as s:
        rows = repo.list_cameras(s, repo.CameraFilter(), columns=list(FIELD_NAMES))
    return [catalog_item_text(r) for r in rows if r.get("device_id")]


def _jsonable(status: UpstreamStatus) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(status):
        value = getattr(status, f.name)
        out[f.name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


class Upstream:
    """GbUpstream over the inventory, its state written to the status file while it runs. ``start``/``stop`` run
    on the SIP server's event loop (GbService)."""

    def __init__(self, inventory: Inventory, config: UpstreamConfig) -> None:
        self.inventory = inventory
        self.client = GbUpstream(config, lambda: catalog_items(inventory))
        self.path = status_path(inventory.settings)
        self._reporter: asyncio.Task[None] | None = None
        self._written: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, inventory: Inventory, *, local_host: str | None = None) -> Upstream | None:
        config = upstream_config(inventory, local_host=local_host)
        return cls(inventory, config) if config is not None else None

    def status(self) -> UpstreamStatus:
        return self.client.status()

    async def start(self) -> None:
        await self.client.start()
        self._reporter = asyncio.ensure_future(self._report())

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reporter
        await self.client.stop()
        self._write()

    async def _report(self) -> None:
        while True:
            try:
                self._write()
            except OSError as exc:
                log.warning("GB/T 28181 upstream: cannot write %s: %s", self.path, exc)
            await asyncio.sleep(REPORT_S)

    def _write(self) -> None:
        cfg = self.client.config
        doc = {
            "upstream": f"{cfg.upstream_id}@{cfg.host}:{cfg.port}/{cfg.transport}",
            "local_id": cfg.local_id,
            "pid": os.getpid(),
            **_jsonable(self.client.status()),
        }
        if doc == self._written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**doc, "written_at": dt.datetime.now(dt.UTC).isoformat()}), encoding="utf-8")
        tmp.replace(self.path)
        self._written = doc


def read_status(settings: Settings) -> dict[str, Any] | None:
    """What the running upstream registration last wrote, or None (not configured here, or never started)."""
    try:
        data = json.loads(status_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
