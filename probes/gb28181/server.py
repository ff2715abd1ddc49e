"""GB/T 28181 upper-platform SIP server (skeleton: the interface; the implementation follows)."""

from __future__ import annotations

from probes.gb28181.api import CatalogAnswer, Directory, Peer

__all__ = ["GbServer"]


class GbServer:
    """SIP over UDP and TCP for GB/T 28181 devices and lower platforms registering to us."""

    udp_port: int | None
    tcp_port: int | None
    stats: dict[str, int]

    def __init__(
        self,
        directory: Directory,
        *,
        sip_id: str,
        realm: str,
        host: str = "127.0.0.1",
        udp_port: int | None = 5060,
        tcp_port: int | None = 5060,
        catalog_quiet_s: float = 5.0,
        catalog_timeout_s: float = 30.0,
        max_failed_auth: int = 5,
        failed_auth_window_s: float = 60.0,
        query_catalog_on_register: bool = True,
    ) -> None:
        self.directory = directory
        self.sip_id = sip_id
        self.realm = realm
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.catalog_quiet_s = catalog_quiet_s
        self.catalog_timeout_s = catalog_timeout_s
        self.max_failed_auth = max_failed_auth
        self.failed_auth_window_s = failed_auth_window_s
        self.query_catalog_on_register = query_catalog_on_register
        self.stats = {}

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def query_catalog(self, device_id: str) -> CatalogAnswer:
        raise NotImplementedError

    async def subscribe_catalog(self, device_id: str, expires: int = 3600) -> bool:
        raise NotImplementedError

    def registered_peer(self, device_id: str) -> Peer | None:
        raise NotImplementedError
