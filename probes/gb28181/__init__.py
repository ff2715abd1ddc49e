"""GB/T 28181 signalling: vms as the upper platform that devices and lower platforms register to over SIP (UDP and
TCP): registration with MD5 digest, keepalives, Catalog queries and subscriptions. Device I/O only (no vms imports).
"""

from probes.gb28181.api import (
    CatalogAnswer,
    CatalogNotice,
    Directory,
    Keepalive,
    Peer,
    Registration,
    Transport,
    Unregistration,
)
from probes.gb28181.server import GbServer

__all__ = [
    "CatalogAnswer",
    "CatalogNotice",
    "Directory",
    "GbServer",
    "Keepalive",
    "Peer",
    "Registration",
    "Transport",
    "Unregistration",
]
