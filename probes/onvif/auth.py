"""Credentials, WS-UsernameToken, HTTP Digest and the failed-login budget.

Cameras differ in what they accept: some only HTTP Digest, some only WS-UsernameToken (DOMAIN 7.2); the token
must be signed with the camera's clock (DOMAIN 7.1); and accounts lock after a few failed logins, one vendor
blocking the client IP for 30 minutes (DOMAIN 7.3). :class:`LoginBudget` is the one place that decides whether
another authenticated attempt on a device is allowed.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from xml.sax.saxutils import escape

__all__ = [
    "Credential",
    "DigestChallenge",
    "DigestSigner",
    "LoginBudget",
    "digest_authorization",
    "digest_response",
    "format_created",
    "parse_digest_challenges",
    "wsse_header",
    "wsse_password_digest",
]

Method = Literal["wsse", "digest"]

_WSSE_NS: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_WSU_NS: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_DIGEST_TYPE_URI: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
)
_BASE64_BINARY: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str = field(repr=False)


# --- WS-UsernameToken ------------------------------------------------------------------------------------------


def format_created(moment: dt.datetime) -> str:
    """xsd:dateTime in UTC without fractions: the form every camera stack we know parses."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# A sweep signs thousands of requests per second, each with its device's clock offset (so with as many different
# seconds): the date part is formatted once per day, the time of day from a table.
_DAYS: dict[int, str] = {}  # days since the epoch -> "YYYY-MM-DDT"
_TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(61))


def _created_at(timestamp: float) -> str:
    """:func:`format_created` of a POSIX timestamp (``time.strftime`` of its whole second, UTC)."""
    day, second = divmod(math.floor(timestamp), 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        if len(_DAYS) >= 64:  # bounded: offsets of days on a few devices cannot grow it
            _DAYS.clear()
        _DAYS[day] = prefix
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    two = _TWO_DIGITS
    return f"{prefix}{two[hour]}:{two[minute]}:{two[second]}Z"


def wsse_password_digest(nonce: bytes, created: str, password: str) -> str:
    """Base64(SHA1(nonce + created + password)), WS-Security UsernameToken Profile 1.0 section 3.1."""
    raw = hashlib.sha1(nonce + created.encode() + password.encode(), usedforsecurity=False).digest()
    return binascii.b2a_base64(raw, newline=False).decode()


_TOKEN_HEAD: dict[str, str] = {}  # username -> the header up to the password digest (the same on every request)


def wsse_header(
    credential: Credential,
    *,
    clock_offset_s: float = 0.0,
    now: dt.datetime | None = None,
    nonce: bytes | None = None,
) -> str:
    """The wsse:Security header. Created is our UTC now plus the device's clock offset (DOMAIN 7.1)."""
    nonce = os.urandom(16) if nonce is None else nonce
    if now is None:
        created = _created_at(time.time() + clock_offset_s)
    else:
        created = format_created(now + dt.timedelta(seconds=clock_offset_s))
    digest = wsse_password_digest(nonce, created, credential.password)
    username = credential.username
    head = _TOKEN_HEAD.get(username)
    if head is None:
        head = (
            f'<wsse:Security xmlns:wsse="{_WSSE_NS}" xmlns:wsu="{_WSU_NS}" s:mustUnderstand="1">'
            f"<wsse:UsernameToken><wsse:Username>{escape(username)}</wsse:Username>"
            f'<wsse:Password Type="{_DIGEST_TYPE_URI}">'
        )
        if len(_TOKEN_HEAD) >= 256:  # bounded, and holds no secret
            _TOKEN_HEAD.clear()
        _TOKEN_HEAD[username] = head
    return (
        f'{head}{digest}</wsse:Password><wsse:Nonce EncodingType="{_BASE64_BINARY}">'
        f"{binascii.b2a_base64(nonce, newline=False).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


# --- HTTP Digest (RFC 7616, RFC 2617) ----------------------------------------------------------------------------

_HASHES: Final[Mapping[str, Callable[[bytes], str]]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}
# RFC 7616 section 3.7: prefer the strongest algorithm offered.
_PREFERENCE: Final = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_ITEM: Final = re.compile(rf'[\s,]*({_TCHARS})(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*))?')


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"  # MD5, MD5-sess, SHA-256, SHA-256-sess
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False

    @property
    def hash_name(self) -> str:
        return self.algorithm.removesuffix("-sess")


def parse_digest_challenges(headers: Iterable[str]) -> list[DigestChallenge]:
    """Digest challenges of WWW-Authenticate values (several schemes may share one header), strongest first."""
    found: list[DigestChallenge] = []
    for header in headers:
        scheme: str | None = None
        params: dict[str, str] = {}
        pos = 0
        for _ in range(256):  # bounded: a hostile header cannot make us spin
            match = _ITEM.match(header, pos)
            if match is None or match.end() == pos:
                break
            pos = match.end()
            name, value = match.group(1), match.group(2)
            if value is None:  # a bare token starts the next challenge: "Digest realm=..., Basic realm=..."
                _add_challenge(found, scheme, params)
                scheme, params = name.lower(), {}
            else:
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                params[name.lower()] = value
        _add_challenge(found, scheme, params)
    rank = {name: i for i, name in enumerate(_PREFERENCE)}
    return sorted(found, key=lambda c: rank[c.algorithm])


def _add_challenge(found: list[DigestChallenge], scheme: str | None, params: dict[str, str]) -> None:
    if scheme != "digest" or "nonce" not in params:
        return
    algorithm = params.get("algorithm", "MD5").upper().replace("SHA256", "SHA-256").replace("-SESS", "-sess")
    if algorithm not in _PREFERENCE:
        return  # e.g. SHA-512-256: not offered by cameras we know; skip rather than guess
    found.append(
        DigestChallenge(
            realm=params.get("realm", ""),
            nonce=params["nonce"],
            algorithm=algorithm,
            qop=tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()),
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            userhash=params.get("userhash", "").lower() == "true",
        )
    )


def digest_response(
    challenge: DigestChallenge,
    credential: Credential,
    *,
    method: str,
    uri: str,
    nc: int,
    cnonce: str,
    body: bytes = b"",
) -> tuple[str, str | None]:
    """(response, qop used) per RFC 7616 section 3.4.1; RFC 2069 style when the server offers no qop."""
    return DigestSigner(challenge, credential).response(method=method, uri=uri, nc=nc, cnonce=cnonce, body=body)


class DigestSigner:
    """HTTP Digest signing with one challenge and one credential. HA1, HA2 per method+URI and the fixed parts of
    the header are computed once; each request then costs one hash (two with ``auth-int``)."""

    __slots__ = ("_h", "_ha1", "_ha2", "_prefix", "_qop", "_sess", "_suffix", "challenge", "credential")

    def __init__(self, challenge: DigestChallenge, credential: Credential) -> None:
        self.challenge = challenge
        self.credential = credential
        h = self._h = _HASHES[challenge.hash_name]
        self._ha1 = h(f"{credential.username}:{challenge.realm}:{credential.password}".encode())
        self._sess = challenge.algorithm.endswith("-sess")
        self._qop: str | None = None
        if challenge.qop:
            self._qop = "auth" if "auth" in challenge.qop else "auth-int"
        self._ha2: dict[tuple[str, str], str] = {}
        username = credential.username
        if challenge.userhash:
            username = h(f"{username}:{challenge.realm}".encode())
        self._prefix = (
            f'Digest username="{_quote(username)}", realm="{_quote(challenge.realm)}", '
            f'nonce="{_quote(challenge.nonce)}", uri="'
        )
        suffix = ""
        if challenge.opaque is not None:
            suffix += f', opaque="{_quote(challenge.opaque)}"'
        if challenge.userhash:
            suffix += ", userhash=true"
        self._suffix = suffix

    def response(
        self, *, method: str, uri: str, nc: int, cnonce: str, body: bytes = b""
    ) -> tuple[str, str | None]:
        h = self._h
        nonce = self.challenge.nonce
        ha1 = h(f"{self._ha1}:{nonce}:{cnonce}".encode()) if self._sess else self._ha1
        qop = self._qop
        if qop == "auth-int":
            ha2 = h(f"{method}:{uri}:{h(body)}".encode())
        else:
            key = (method, uri)
            ha2 = self._ha2.get(key) or ""
            if not ha2:
                ha2 = h(f"{method}:{uri}".encode())
                if len(self._ha2) < 64:
                    self._ha2[key] = ha2
        if qop is None:
            return h(f"{ha1}:{nonce}:{ha2}".encode()), None
        return h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}".encode()), qop

    def authorization(self, *, method: str, uri: str, nc: int, cnonce: str | None = None, body: bytes = b"") -> str:
        cnonce = cnonce or os.urandom(8).hex()
        response, qop = self.response(method=method, uri=uri, nc=nc, cnonce=cnonce, body=body)
        header = f'{self._prefix}{_quote(uri)}", algorithm={self.challenge.algorithm}, response="{response}"'
        if qop is not None:
            header += f', qop={qop}, nc={nc:08x}, cnonce="{cnonce}"'
        return header + self._suffix


def digest_authorization(
    challenge: DigestChallenge,
    credential: Credential,
    *,
    method: str,
    uri: str,
    nc: int,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    return DigestSigner(challenge, credential).authorization(method=method, uri=uri, nc=nc, cnonce=cnonce, body=body)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# --- failed-login budget -----------------------------------------------------------------------------------------


_FINGERPRINT_CACHE: Final = 256


@dataclass
class _DeviceLogins:
    failures: list[float] = field(default_factory=list)  # wall-clock times of charged attempts
    bad: dict[str, float] = field(default_factory=dict)  # "fingerprint:method" -> when it was rejected
    good: tuple[str, str] | None = None  # (fingerprint, method) that last worked


class LoginBudget:
    """At most ``max_failures`` failed authenticated attempts per device (host:port) per ``window_s``,
    shared by every interrogation that holds this object (DOMAIN 7.3).

    Each authenticated attempt with credentials not yet proven on the device is charged *before* it is sent
    and refunded when the device did not reject it, so concurrent sweeps cannot overshoot. A rejected
    credential+method pair is never tried again on that device for ``bad_ttl_s``. The defaults (2 per 30
    minutes) stay below the common lockout of 3 failures however often a sweep runs.

    Credentials are remembered only as HMAC fingerprints under ``secret``; pass the same secret after a restart
    (with :meth:`restore`) to keep recognising known-bad credentials. ``on_change`` is called with the device
    key after every change so a service can persist ``snapshot([key])``.
    """

    def __init__(
        self,
        max_failures: int = 2,
        window_s: float = 1800.0,
        *,
        bad_ttl_s: float = 6 * 3600.0,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if max_failures < 0 or window_s <= 0:
            raise ValueError("max_failures must be >= 0 and window_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.bad_ttl_s = bad_ttl_s
        self._secret = secret if secret is not None else os.urandom(32)
        self._clock = clock
        self._on_change = on_change
        self._devices: dict[str, _DeviceLogins] = {}
        # A sweep asks for the same few credentials' fingerprints thousands of times; an HMAC each time adds up.
        # Bounded, in memory only (the caller holds these credentials anyway; snapshots keep fingerprints only).
        self._fingerprints: dict[Credential, str] = {}

    # fingerprints -----------------------------------------------------------------------------------------

    def fingerprint(self, credential: Credential) -> str:
        known = self._fingerprints.get(credential)
        if known is not None:
            return known
        message = f"{credential.username}\x00{credential.password}".encode()
        value = hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:24]
        if len(self._fingerprints) >= _FINGERPRINT_CACHE:
            self._fingerprints.clear()
        self._fingerprints[credential] = value
        return value

    def _state(self, device: str) -> _DeviceLogins:
        state = self._devices.get(device)
        if state is None:
            state = self._devices[device] = _DeviceLogins()
        now = self._clock()
        if state.failures and state.failures[0] <= now - self.window_s:
            state.failures = [t for t in state.failures if t > now - self.window_s]
        if state.bad:
            for key in [k for k, t in state.bad.items() if t <= now - self.bad_ttl_s]:
                del state.bad[key]
        return state

    def _changed(self, device: str) -> None:
        if self._on_change is not None:
            self._on_change(device)

    # queries ----------------------------------------------------------------------------------------------

    def remaining(self, device: str) -> int:
        return max(0, self.max_failures - len(self._state(device).failures))

    def is_bad(self, device: str, credential: Credential, method: Method) -> bool:
        return f"{self.fingerprint(credential)}:{method}" in self._state(device).bad

    def order(self, device: str, credentials: Sequence[Credential]) -> list[Credential]:
        """Credentials to try, the one that last worked first; duplicates removed."""
        unique: dict[str, Credential] = {}
        for credential in credentials:
            unique.setdefault(self.fingerprint(credential), credential)
        items = list(unique.items())
        good = self._state(device).good
        if good is not None:
            items.sort(key=lambda item: item[0] != good[0])  # stable: the rest keep the caller's order
        return [credential for _, credential in items]

    def preferred_method(self, device: str, credential: Credential) -> Method | None:
        good = self._state(device).good
        if good is not None and good[0] == self.fingerprint(credential) and good[1] in ("wsse", "digest"):
            return "wsse" if good[1] == "wsse" else "digest"
        return None

    # updates ----------------------------------------------------------------------------------------------

    def try_charge(self, device: str) -> bool:
        """Reserve one failed attempt; False when the budget is spent (do not send the attempt)."""
        state = self._state(device)
        if len(state.failures) >= self.max_failures:
            return False
        state.failures.append(self._clock())
        self._changed(device)
        return True

    def refund(self, device: str) -> None:
        """The charged attempt was not rejected for its credentials (success, or no verdict)."""
        state = self._state(device)
        if state.failures:
            state.failures.pop()
            self._changed(device)

    def mark_bad(self, device: str, credential: Credential, method: Method) -> None:
        state = self._state(device)
        state.bad[f"{self.fingerprint(credential)}:{method}"] = self._clock()
        fingerprint = self.fingerprint(credential)
        if state.good is not None and state.good == (fingerprint, method):
            state.good = None
        self._changed(device)

    def mark_good(self, device: str, credential: Credential, method: Method) -> None:
        state = self._state(device)
        fingerprint = self.fingerprint(credential)
        state.bad.pop(f"{fingerprint}:{method}", None)
        if state.good != (fingerprint, method):
            state.good = (fingerprint, method)
            self._changed(device)

    def forget(self, device: str) -> None:
        """Drop what we know about a device (e.g. after an operator changed its credentials)."""
        if self._devices.pop(device, None) is not None:
            self._changed(device)

    # persistence ------------------------------------------------------------------------------------------

    def snapshot(self, devices: Iterable[str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict of the state (fingerprints only, never credentials)."""
        keys = list(self._devices) if devices is None else list(devices)
        out: dict[str, Any] = {}
        for key in keys:
            if key not in self._devices:
                continue
            state = self._state(key)
            out[key] = {"failures": list(state.failures), "bad": dict(state.bad), "good": state.good}
        return {"version": 1, "window_s": self.window_s, "devices": out}

    def replace(self, snapshot: Mapping[str, Any]) -> None:
        """Take the state of the devices in a :meth:`snapshot` as it is (what a worker process that probed them
        learnt, a cleared rejection included); other devices keep theirs."""
        devices = snapshot.get("devices")
        if snapshot.get("version") != 1 or not isinstance(devices, Mapping):
            return
        for key in devices:
            self._devices.pop(str(key), None)
        self.restore(snapshot)

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Merge a :meth:`snapshot`; unknown versions and malformed entries are ignored."""
        if snapshot.get("version") != 1:
            return
        devices = snapshot.get("devices")
        if not isinstance(devices, Mapping):
            return
        for key, entry in devices.items():
            if not isinstance(entry, Mapping):
                continue
            state = self._devices.setdefault(str(key), _DeviceLogins())
            failures = entry.get("failures") or []
            state.failures = sorted({*state.failures, *(float(t) for t in failures)})
            for name, when in (entry.get("bad") or {}).items():
                state.bad[str(name)] = max(float(when), state.bad.get(str(name), 0.0))
            good = entry.get("good")
            if isinstance(good, list | tuple) and len(good) == 2:
                state.good = (str(good[0]), str(good[1]))
