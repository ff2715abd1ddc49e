"""Finding ONVIF devices: WS-Discovery (multicast on a named interface, unicast per host) and range scans."""

from probes.discovery.scan import scan_range
from probes.discovery.wsdiscovery import ProbeVariant, probe_multicast, probe_unicast

__all__ = ["ProbeVariant", "probe_multicast", "probe_unicast", "scan_range"]
