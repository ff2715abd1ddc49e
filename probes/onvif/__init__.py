"""ONVIF device client: a small asyncio HTTP/1.1 client + prebuilt SOAP envelopes + lxml, returning frozen dataclasses.

Public API::

    session = make_session()                      # one per sweep (async with, or await session.close())
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
* What an inventory needs, and no more, by default: clock, device information, services, scopes, MAC, every
  profile with its stream URI, and one snapshot URI, the main profile's (largest picture, H.265 first).
  ``snapshots="all"`` asks for every profile's snapshot URI, ``hostname=True`` adds GetHostname.
* Once a device accepted WS-UsernameToken or digest, every later call goes out signed at once (digest reuses the
  nonce with an increasing nc; a stale or single-use nonce is refreshed without charging the login budget).
* Calls per device run one after the other on one keep-alive connection (``per_device_concurrency`` 1); a
  sweep's throughput comes from running many devices at once, and NVRs are spared parallel calls (DOMAIN 7.8).
* A range scan right before an interrogation hands on what it learnt: the device's clock reading
  (:mod:`probes.onvif.clocks`, used when younger than ``reuse_clock_s``, default 30 s) and its open connection
  (:class:`probes.onvif.http.HttpClient` ``park_on_close``), saving a request and a TCP handshake per device.
* Every address a device hands out (XAddrs, service addresses) is decided by one address policy
  (:mod:`probes.policy`, ``policy=``; default: the device's own address only) before anything, least of all a login,
  is sent there; a refusal is the failure cause ``address_refused``.
* HTTP is :mod:`probes.onvif.http` rather than aiohttp: the same calls cost ~0.2-0.35 ms of CPU each through
  aiohttp and a few tens of microseconds here. Reply size is capped, every call has a total timeout, and the odd
  HTTP of camera web servers (chunked, close-delimited, HTTP/1.0, bare LF, lowercase headers) is read.
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
