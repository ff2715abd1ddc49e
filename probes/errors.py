"""Failure codes for device probes.

Expected device misbehaviour is sorted into a :class:`Cause` at the boundary (STYLE habit 4): a probe returns a
:class:`Failure`, it does not raise for a camera's faults. :class:`ProbeError` carries a failure inside the
device library only and never escapes its public functions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["LOGIN_BUDGET_EXHAUSTED", "Cause", "Failure", "ProbeError", "scrub"]

# Fixed wording so operators and the service layer can recognise a stop ordered by our own budget (DOMAIN 7.3).
LOGIN_BUDGET_EXHAUSTED: Final = "login budget exhausted; not retrying to avoid lockout"

_MAX_DETAIL = 300


class Cause(enum.StrEnum):
    """Why a step (or a whole device) failed. Values are stable strings for storage and the API."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    # Our own failed-login budget said stop before the camera could lock the account (DOMAIN 7.3).
    LOCKED_OUT = "locked_out"
    CLOCK_SKEW = "clock_skew"
    NOT_SUPPORTED = "not_supported"
    MALFORMED = "malformed"
    TLS = "tls"
    HTTP_ERROR = "http_error"
    PROTOCOL = "protocol"
    # The address policy (probes.policy) refused where a device pointed us: nothing was sent there.
    ADDRESS_REFUSED = "address_refused"

    @property
    def is_transport(self) -> bool:
        """True when nothing was heard from the device (the next call will most likely fail the same way)."""
        return self in (Cause.TIMEOUT, Cause.REFUSED, Cause.UNREACHABLE, Cause.TLS)

    @property
    def is_auth(self) -> bool:
        return self in (Cause.AUTH, Cause.LOCKED_OUT)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed step. ``detail`` is for operators and never contains credentials."""

    cause: Cause
    step: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.step}: {self.cause.value}" + (f" ({self.detail})" if self.detail else "")


class ProbeError(Exception):
    """Internal carrier of a :class:`Failure`; public probe functions turn it into a result."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def scrub(detail: str, secrets: tuple[str, ...] = ()) -> str:
    """Shorten ``detail`` and blank any secret in it (a device may echo what it was sent)."""
    for secret in secrets:
        # Very short secrets would blank half the message; they are also not worth protecting from a log.
        if len(secret) >= 3:
            detail = detail.replace(secret, "***")
    detail = " ".join(detail.split())
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 3] + "..."
