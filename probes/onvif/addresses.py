"""Device address handling: parse targets, rewrite advertised addresses, strip credentials from URIs.

Cameras behind NAT, on a second NIC, or with a half-configured network stack advertise XAddrs, stream and
snapshot URIs naming private, 0.0.0.0 or loopback hosts (DOMAIN 7.4). We rewrite those to the host that actually
answered and keep the original; which hosts mean "the device itself" is the address policy's decision
(:mod:`probes.policy`, which also decides whether anything else may be connected to). Credentials some firmwares
embed in URIs are always removed.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from probes.policy import AddressPolicy

__all__ = [
    "DEVICE_SERVICE_PATH",
    "Target",
    "format_hostport",
    "parse_target",
    "rewrite_uri",
    "strip_credentials",
]

DEVICE_SERVICE_PATH = "/onvif/device_service"

# Query parameters some encoders use to carry a login in stream/snapshot URIs (never keep them in results).
_SECRET_PARAMS = frozenset({"user", "username", "usr", "login", "pass", "password", "pwd", "passwd", "auth"})
_USERINFO = re.compile(r"(?<=//)[^/@?#]*@")
_SECRET_QUERY = re.compile(r"[?&;](?:" + "|".join(sorted(_SECRET_PARAMS)) + r")=", re.IGNORECASE)


class Target(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{format_hostport(self.host, self.port)}{self.path}"

    @property
    def key(self) -> str:
        """host:port, the unit of the failed-login budget and of per-device concurrency."""
        return format_hostport(self.host, self.port)


def format_hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return shown if port is None else f"{shown}:{port}"


def parse_target(target: str, *, port: int = 80, path: str = DEVICE_SERVICE_PATH) -> Target:
    """Accept an XAddr URL, ``host``, ``host:port`` or ``[v6]:port``; credentials in a URL are dropped."""
    text = target.strip()
    if not text:
        raise ValueError("empty target")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {scheme!r} in target")
    host = parts.hostname
    if not host:
        raise ValueError("target has no host")
    default = 443 if scheme == "https" else 80
    given_port = parts.port  # raises ValueError for a bad port
    if given_port is None:
        given_port = default if "://" in target else port
    return Target(scheme, host, given_port, (parts.path or path) + (f"?{parts.query}" if parts.query else ""))


_DEVICE_ONLY = AddressPolicy()  # no network allowed beyond the device: what a caller without a policy gets


def _needs_rewrite(uri_host: str | None, answered_host: str, policy: AddressPolicy) -> bool:
    if uri_host and uri_host.lower() == answered_host.lower():
        return False
    # Canonically parsed (2131296259, 0x7f000001, 127.1, localhost. are addresses): 0.0.0.0, a NAT address
    # outside the allowed networks, loopback or link-local while the device is elsewhere mean the device itself.
    # A DNS name, a public or multicast address is kept as written; whether it may be connected to is the
    # policy's check, not this text rewrite.
    return policy.rewrites(uri_host, answered_host)


def _quick_host(uri: str) -> str | None:
    """The host of a plain ``scheme://host[:port]/...`` URI; None when a full parse is needed."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        return None
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark, 0, end)
        if at >= 0:
            end = at
    netloc = rest[:end]
    if not netloc or "[" in netloc or "@" in netloc:
        return None
    return netloc.partition(":")[0] or None


def strip_credentials(uri: str) -> str:
    """Remove user:password@ and login query parameters (some encoders put them in stream URIs)."""
    if "@" not in uri and ("?" not in uri or ("%" not in uri and _SECRET_QUERY.search(uri) is None)):
        return uri  # nothing to remove: the common case, without a parse
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            kept = [(k, v) for k, v in pairs if k.lower() not in _SECRET_PARAMS]
            if len(kept) != len(pairs):
                query = urlencode(kept, safe="/:")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return _USERINFO.sub("", uri)


def rewrite_uri(
    uri: str,
    answered_host: str,
    answered_port: int | None,
    *,
    answered_scheme: str = "http",
    policy: AddressPolicy | None = None,
) -> str:
    """``uri`` without credentials, its host replaced by ``answered_host`` when it names the device itself:
    0.0.0.0, a private or NAT address outside the policy's allowed networks, or a loopback or link-local address
    while the device is elsewhere (DOMAIN 7.4). For an HTTP(S) URI of the scheme we talked, the port is replaced
    too (a NAT forwards one port to the device's web server); RTSP keeps its port, which we cannot know.
    """
    rules = policy or _DEVICE_ONLY
    clean = strip_credentials(uri.strip())
    quick = _quick_host(clean)
    if quick is not None and not _needs_rewrite(quick, answered_host, rules):
        return clean  # names the host that answered: the common case, without a parse
    try:
        parts = urlsplit(clean)
        uri_host = parts.hostname
        uri_port = parts.port
    except ValueError:
        return clean
    if not parts.scheme or not _needs_rewrite(uri_host, answered_host, rules):
        return clean
    port = uri_port  # an explicit port stays explicit; an implicit one stays implicit
    if answered_port is not None and parts.scheme.lower() == answered_scheme.lower():
        default = {"http": 80, "https": 443}.get(parts.scheme.lower())
        port = None if answered_port == default else answered_port
    netloc = format_hostport(answered_host, port)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
