"""Device-side authentication of the simulated cameras: WS-UsernameToken and HTTP Digest, with account lockout.

WS-UsernameToken (ONVIF Core 5.12.2): PasswordDigest = Base64(SHA1(nonce + created + password)), `Created` must lie
within +-5 min of the device's own clock, which is how a skewed camera rejects a client that signs with its own time
(DOMAIN.md 7.1). HTTP Digest: RFC 7616 with MD5 and qop=auth (what cameras offer), nonces stateless (HMAC of a
timestamp), no replay protection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from lxml import etree

from probes.sim.devices import LOCKOUT_THRESHOLD, DeviceSpec

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_PASSWORD_DIGEST = "#PasswordDigest"  # noqa: S105 - a token type URI, not a secret

CREATED_TOLERANCE_S = 300.0  # servers accept about +-5 min (DOMAIN.md 7.1)
DIGEST_NONCE_TTL_S = 300.0
DEFAULT_LOCK_PERIOD_S = 1800.0  # one vendor blocks for 30 minutes (DOMAIN.md 7.3)

_DIGEST_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class AuthOutcome(Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials offered: a challenge, not a failed login
    BAD_PASSWORD = "bad_password"  # noqa: S105 - counts towards lockout
    EXPIRED = "expired"  # WS-Security Created outside the device's window, or a stale digest nonce
    LOCKED = "locked"


@dataclass(slots=True)
class AccountState:
    """Per-device login bookkeeping; consecutive failures lock the account on `lockout` devices."""

    failed: int = 0
    locked_until: float = 0.0

    def locked(self, now: float) -> bool:
        return now < self.locked_until

    def record(self, outcome: AuthOutcome, *, lockable: bool, now: float, lock_period_s: float) -> None:
        if outcome is AuthOutcome.OK:
            self.failed = 0
        elif outcome is AuthOutcome.BAD_PASSWORD:
            self.failed += 1
            if lockable and self.failed >= LOCKOUT_THRESHOLD:
                self.locked_until = now + lock_period_s
                self.failed = 0


def _created_epoch(text: str) -> float | None:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


_SECURITY = f"{{{WSSE_NS}}}Security"
_USERNAME_TOKEN = f"{{{WSSE_NS}}}UsernameToken"
_USERNAME = f"{{{WSSE_NS}}}Username"
_PASSWORD = f"{{{WSSE_NS}}}Password"
_NONCE = f"{{{WSSE_NS}}}Nonce"
_CREATED = (f"{{{WSU_NS}}}Created", f"{{{WSSE_NS}}}Created")  # some clients put Created in the wsse namespace


def _child(parent: etree._Element, tag: str) -> etree._Element | None:
    # a plain scan of the few children: lxml path lookups cost several microseconds each
    for c in parent:
        if c.tag == tag:
            return c
    return None


def check_wsse(header: etree._Element | None, device: DeviceSpec, *, now: float) -> AuthOutcome:
    """Check the UsernameToken in a SOAP Header against the device's password and clock (`now` is real time)."""
    security = None if header is None else _child(header, _SECURITY)
    token = None if security is None else _child(security, _USERNAME_TOKEN)
    if token is None:
        return AuthOutcome.MISSING
    parts = {c.tag: c for c in token}
    user_el = parts.get(_USERNAME)
    user = (user_el.text or "").strip() if user_el is not None else ""
    pw_el = parts.get(_PASSWORD)
    if pw_el is None:
        return AuthOutcome.BAD_PASSWORD
    given = (pw_el.text or "").strip()
    if not (pw_el.get("Type") or "").endswith(_PASSWORD_DIGEST):
        # PasswordText: many cameras still accept it; no timestamp to check.
        ok = user == device.username and hmac.compare_digest(given.encode(), device.password.encode())
        return AuthOutcome.OK if ok else AuthOutcome.BAD_PASSWORD
    created_el = parts.get(_CREATED[0])
    if created_el is None:
        created_el = parts.get(_CREATED[1])
    created = (created_el.text or "") if created_el is not None else ""
    nonce_el = parts.get(_NONCE)
    try:
        nonce = base64.b64decode(((nonce_el.text or "") if nonce_el is not None else "").strip(), validate=True)
    except ValueError:
        return AuthOutcome.BAD_PASSWORD
    # ONVIF mandates SHA-1 here (WS-Security UsernameToken Profile 1.0).
    sha1 = hashlib.sha1(nonce + created.encode() + device.password.encode(), usedforsecurity=False)
    expected = base64.b64encode(sha1.digest())
    if user != device.username or not hmac.compare_digest(given.encode(), expected):
        return AuthOutcome.BAD_PASSWORD
    created_at = _created_epoch(created)
    if created_at is None or abs(created_at - (now + device.clock_offset_s)) > CREATED_TOLERANCE_S:
        return AuthOutcome.EXPIRED
    return AuthOutcome.OK


class DigestAuthority:
    """HTTP Digest for every device of one server: stateless nonces bound to the device's address."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or os.urandom(16)

    def realm(self, device: DeviceSpec) -> str:
        # Hikvision-style realm names the model; clients must take it from the challenge, never assume it.
        return f"IP Camera({device.serial[-5:]})"

    def _nonce(self, device: DeviceSpec, now: float) -> str:
        stamp = f"{int(now):x}"
        mac = hmac.new(self._secret, f"{stamp}:{device.host}".encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp}{mac}"

    def challenge(self, device: DeviceSpec, *, now: float, stale: bool = False) -> str:
        nonce = self._nonce(device, now)
        value = f'Digest realm="{self.realm(device)}", qop="auth", nonce="{nonce}", algorithm=MD5'
        return value + (", stale=TRUE" if stale else "")

    def check(self, authorization: str | None, method: str, device: DeviceSpec, *, now: float) -> AuthOutcome:
        if not authorization or authorization[:7].lower() != "digest ":
            return AuthOutcome.MISSING
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _DIGEST_PARAM.finditer(authorization[7:])}
        nonce = params.get("nonce", "")
        if len(nonce) < 25:
            return AuthOutcome.MISSING
        stamp = nonce[:-24]
        try:
            issued = int(stamp, 16)
        except ValueError:
            return AuthOutcome.MISSING
        expected_mac = hmac.new(self._secret, f"{stamp}:{device.host}".encode(), hashlib.sha256).hexdigest()[:24]
        if not hmac.compare_digest(nonce[-24:], expected_mac):
            return AuthOutcome.MISSING  # not our nonce: answer with a fresh challenge
        if params.get("algorithm", "MD5").upper() != "MD5":
            return AuthOutcome.MISSING
        user = params.get("username", "")
        uri = params.get("uri", "")
        ha1 = _md5(f"{user}:{self.realm(device)}:{device.password}")
        ha2 = _md5(f"{method}:{uri}")
        qop = params.get("qop")
        if qop:
            expected = _md5(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:{qop}:{ha2}")
        else:  # RFC 2069 clients
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        if user != device.username or not hmac.compare_digest(params.get("response", ""), expected):
            return AuthOutcome.BAD_PASSWORD
        if now - issued > DIGEST_NONCE_TTL_S:
            return AuthOutcome.EXPIRED
        return AuthOutcome.OK


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
