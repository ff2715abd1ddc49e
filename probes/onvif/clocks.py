"""Device clocks read moments ago, so an interrogation right after a range scan need not ask again.

A range scan identifies devices by an unauthenticated GetSystemDateAndTime (DOMAIN 7.5), which is exactly the
first call of an interrogation (DOMAIN 7.1). The scan leaves each reading here; :func:`~probes.onvif.client.interrogate`
takes a reading younger than its ``reuse_clock_s`` (default 30 s) instead of repeating the call, and says so in
the report's steps. Clock offsets do not drift measurably in seconds. Readings are plain data (no sockets), kept
for at most :data:`MAX_AGE_S` and :data:`MAX_ENTRIES` devices, least recently stored dropped first.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from probes.onvif.soap import SoapVersion

__all__ = ["MAX_AGE_S", "MAX_ENTRIES", "RECENT_CLOCKS", "ClockReading", "RecentClocks"]

MAX_AGE_S: Final = 300.0
MAX_ENTRIES: Final = 65_536  # one /16 scan on one port


@dataclass(frozen=True, slots=True)
class ClockReading:
    offset_s: float  # device clock minus ours
    device_time_utc: dt.datetime
    from_local: bool  # the device sent only LocalDateTime
    soap: SoapVersion  # the SOAP version the device answered
    at: float  # time.monotonic() of the reading


class RecentClocks:
    """host:port -> the latest :class:`ClockReading` (thread-safe)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_age_s: float = MAX_AGE_S) -> None:
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._readings: OrderedDict[str, ClockReading] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, key: str, reading: ClockReading) -> None:
        with self._lock:
            self._readings.pop(key, None)
            self._readings[key] = reading
            while len(self._readings) > self.max_entries:
                self._readings.popitem(last=False)

    def get(self, key: str, max_age_s: float) -> ClockReading | None:
        """The reading of ``key`` if younger than ``max_age_s`` (and than the cache's own limit)."""
        if max_age_s <= 0:
            return None
        with self._lock:
            reading = self._readings.get(key)
            if reading is None:
                return None
            age = time.monotonic() - reading.at
            if age > self.max_age_s:
                del self._readings[key]
                return None
        return reading if age <= max_age_s else None

    def forget(self, key: str | None = None) -> None:
        """Drop one device's reading, or all of them."""
        with self._lock:
            if key is None:
                self._readings.clear()
            else:
                self._readings.pop(key, None)

    def __len__(self) -> int:
        return len(self._readings)


RECENT_CLOCKS: Final = RecentClocks()
