"""Simulated ONVIF camera fleet: the `vms sim` demo and the real local devices the prober's tests run against."""

from probes.sim.devices import (
    DEFAULT_FAULT_MIX,
    FAULTS,
    Credential,
    DeviceSpec,
    FleetCredentials,
    ProfileSpec,
    build_fleet,
    covering_fault_layout,
    fleet_credentials,
)
from probes.sim.discovery import DiscoveryResponder
from probes.sim.fleet import SimFleet, run_fleet
from probes.sim.onvif_server import OnvifServer
from probes.sim.rtsp import RtspServer, RtspUnavailable, start_rtsp_server

__all__ = [
    "DEFAULT_FAULT_MIX",
    "FAULTS",
    "Credential",
    "DeviceSpec",
    "DiscoveryResponder",
    "FleetCredentials",
    "OnvifServer",
    "ProfileSpec",
    "RtspServer",
    "RtspUnavailable",
    "SimFleet",
    "build_fleet",
    "covering_fault_layout",
    "fleet_credentials",
    "run_fleet",
    "start_rtsp_server",
]
