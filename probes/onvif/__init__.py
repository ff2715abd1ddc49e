"""ONVIF device client: aiohttp + prebuilt SOAP envelopes + lxml, returning frozen dataclasses.

Public API::

    session = make_session()                      # one per process/sweep; bounded, short keep-alive
    budget = LoginBudget()                        # keep it across sweeps (snapshot()/restore() to persist)
    report = await interrogate("http://10.1.2.3/onvif/device_service", credentials=[Credential("admin", pw)],
                               session=session, budget=budget, auth_hint=previous.auth_method)
    reports = await interrogate_many(targets, credentials_for=..., budget=budget, concurrency=200)

Choices that DOMAIN.md section 7 leaves open, written down here:

* Auth scheme detection: the first authenticated call goes out anonymously; an HTTP 401 with a Digest challenge
  means digest first, a SOAP NotAuthorized fault means WS-UsernameToken. Anonymous requests carry no
  credentials, so they never count as failed logins. A remembered method (``auth_hint``, or the budget's memory
  of what worked) skips that request for WS-UsernameToken.
* Login budget: default 2 failed attempts per device per 30 min, pessimistically charged before sending, and a
  rejected credential+method is not retried on that device for 6 h. Every credential is tried with the likely
  method before any is tried with the other one. Auth faults after a successful login (a user lacking rights for
  one call) are recorded but not charged.
* ``ok`` is False only when the device never spoke SOAP/HTTP 2xx or authentication was impossible; every other
  problem is a ``Failure`` in ``failures``. A clock more than 5 min off is reported as a ``clock_skew`` failure
  even though signing with the device's clock makes it harmless.
* Media2 profiles are added when Media does not list their token, or lists it with another encoding (H.265);
  tokens stay unique in ``profiles``.
"""

from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import (
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    MAX_REPLY_BYTES,
    interrogate,
    interrogate_many,
    interrogate_stream,
    make_session,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "MAX_REPLY_BYTES",
    "Credential",
    "LoginBudget",
    "interrogate",
    "interrogate_many",
    "interrogate_stream",
    "make_session",
]
