"""Camera credential sets, encrypted at rest (Fernet) and chosen per address range.

Only ``secrets_for`` decrypts, for the probes that log in; nothing here returns a password to the API or logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vms.catalog.domain import URI_FIELDS
from vms.errors import Conflict, ValidationFailed
from vms.store import repository as repo
from vms.store.models import Credential

if TYPE_CHECKING:
    from probes.onvif.auth import Credential as ProbeCredential


@dataclass(frozen=True, slots=True)
class Login:
    """A decrypted login. ``repr`` hides the password so it cannot reach a log by accident."""

    credential_id: int
    name: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login(name={self.name!r}, username={self.username!r}, password='***')"


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    id: int
    name: str
    username: str
    scope: str | None
    is_default: bool


class Cipher:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ValidationFailed("the credential key is not a valid Fernet key (32 url-safe base64 bytes)") from exc

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise ValidationFailed("a stored credential cannot be decrypted with the configured key") from exc


def _network(scope: str | None) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not scope:
        return None
    try:
        return ipaddress.ip_network(scope, strict=False)
    except ValueError as exc:
        raise ValidationFailed(f"scope {scope!r} is not an address range (CIDR)") from exc


def add_credential(
    session: Session,
    cipher: Cipher,
    *,
    name: str,
    username: str,
    password: str,
    scope: str | None = None,
    default: bool = False,
    actor: str,
    replace: bool = False,
) -> int:
    net = _network(scope)
    row = session.scalar(select(Credential).where(Credential.name == name))
    if row is not None and not replace:
        raise Conflict(f"a credential set named {name!r} exists")
    if default:
        session.execute(update(Credential).values(is_default=False))
    if row is None:
        row = Credential(name=name, username=username, secret=cipher.encrypt(password))
        session.add(row)
    row.username = username
    row.secret = cipher.encrypt(password)
    row.scope = str(net) if net else None
    row.is_default = default
    session.flush()
    repo.audit(
        session,
        actor=actor,
        action="credential.set",
        target=name,
        details={"username": username, "scope": row.scope, "default": default},
    )
    return row.id


def list_credentials(session: Session) -> list[CredentialInfo]:
    rows = session.scalars(select(Credential).order_by(Credential.name))
    return [CredentialInfo(r.id, r.name, r.username, r.scope, r.is_default) for r in rows]


class CredentialResolver:
    """The logins for each address, decrypted once per sweep and matched by range in memory."""

    def __init__(self, logins: Sequence[tuple[str | None, bool, Login]]) -> None:
        self._scoped: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Login]] = []
        self._default: list[Login] = []
        for scope, is_default, login in logins:
            if scope:
                net = _network(scope)
                assert net is not None
                self._scoped.append((net, login))
            elif is_default:
                self._default.append(login)
        self._scoped.sort(key=lambda item: -item[0].prefixlen)  # most specific range first
        self._cache: dict[str, list[Login]] = {}

    def logins(self, host: str) -> list[Login]:
        found = self._cache.get(host)
        if found is None:
            try:
                addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
            except ValueError:
                addr = None
            scoped = [
                lg for net, lg in self._scoped if addr is not None and addr.version == net.version and addr in net
            ]
            found = self._cache[host] = scoped + self._default
        return found

    @classmethod
    def load(cls, session: Session, cipher: Cipher) -> CredentialResolver:
        rows = session.scalars(select(Credential))
        return cls([(r.scope, r.is_default, Login(r.id, r.name, r.username, cipher.decrypt(r.secret))) for r in rows])

    def credentials(self, target: str) -> list[ProbeCredential]:
        """The logins for a probe target (a device-service URL or host[:port]), in the probes' form."""
        from probes.onvif.addresses import parse_target
        from probes.onvif.auth import Credential as ProbeCredential

        return [ProbeCredential(lg.username, lg.password) for lg in self.logins(parse_target(target).host)]


def logins_for(session: Session, cipher: Cipher, host: str) -> list[Login]:
    """Logins to try on ``host``: the most specific matching range first, then the default set."""
    return CredentialResolver.load(session, cipher).logins(host)


_QUERY_USER = ("user", "username", "usr", "login")
_QUERY_PASSWORD = ("password", "pass", "pwd", "passwd")


def url_logins(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """host -> (username, password) found in imported stream/snapshot URLs, as user:password@ or as login query
    parameters (some encoders' snapshot URLs): everything the URL stripper removes is kept here first."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    found: dict[str, tuple[str, str]] = {}
    for rec in records:
        for name in URI_FIELDS:
            value = rec.get(name)
            if not isinstance(value, str) or ("@" not in value and "?" not in value):
                continue
            try:
                parts = urlsplit(value)
            except ValueError:
                continue
            if not parts.hostname:
                continue
            if parts.username:
                found.setdefault(parts.hostname, (unquote(parts.username), unquote(parts.password or "")))
                continue
            query = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
            user = next((query[k] for k in _QUERY_USER if k in query), None)
            if user:
                password = next((query[k] for k in _QUERY_PASSWORD if k in query), "")
                found.setdefault(parts.hostname, (user, password))
    return found


# Import report codes: a row's login columns held a password but the row no IP address, or the login lacks its
# user name or its password (half a login is never tried on a device: it would only spend its lockout budget).
LOGIN_NO_HOST = "LOGIN-NO-HOST"
LOGIN_INCOMPLETE = "LOGIN-INCOMPLETE"


def login_host(value: object) -> str | None:
    """The host a ledger row's login is kept for: its IP address (as text), None when it has none."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def store_url_logins(
    cipher: Cipher, session: Session, logins: Mapping[str, tuple[str, str]], actor: str, *, prefix: str = "url"
) -> int:
    """Keep credentials found in imported URLs (``prefix`` "url") or a ledger's login columns ("ledger") as
    per-host credential sets named ``<prefix>:<host>`` (the records are stored without them)."""
    stored = 0
    for host, (username, password) in logins.items():
        try:
            scope = str(ipaddress.ip_network(host))
        except ValueError:
            continue  # a host name: no range to scope it to
        cid = add_credential(
            session,
            cipher,
            name=f"{prefix}:{host}",
            username=username,
            password=password,
            scope=scope,
            actor=actor,
            replace=True,
        )
        repo.link_credential(session, host, cid)
        stored += 1
    return stored
