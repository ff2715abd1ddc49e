"""What the RTSP client and the snapshot fetcher share: URIs without credentials, answering one 401 challenge, and
saying why a login or a connection failed.

A URI's userinfo is never sent, logged or returned: it is cut off here and used as the credential only when the
caller gave none. A challenge is answered with Digest when the server offers it (the strongest algorithm offered,
qop ``auth`` when offered, RFC 2069 style otherwise) and with Basic only when Basic is all it offers.
"""

from __future__ import annotations

import base64
import errno
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from probes.errors import scrub
from probes.onvif.auth import Credential, DigestSigner, parse_digest_challenges

__all__ = ["Authorizer", "clean_uri", "connect_failed", "login_refused", "pick_credential", "secrets_of", "with_host"]

_BASIC: Final = re.compile(r"(?:^|,)\s*basic(?:\s|,|$)", re.IGNORECASE)


def clean_uri(uri: str) -> tuple[str, Credential | None]:
    """``uri`` without userinfo (and without a fragment), and the credential the userinfo held (percent-decoded).
    Raises ValueError for a URI that does not parse or has no host."""
    parts = urlsplit(uri.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError("not an absolute URI")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    credential: Credential | None = None
    if at and userinfo:
        user, _, password = userinfo.partition(":")
        credential = Credential(unquote(user), unquote(password))
    if not hostport:
        raise ValueError("URI without a host")
    return urlunsplit((parts.scheme.lower(), hostport, parts.path or "/", parts.query, "")), credential


def with_host(uri: str, ip: str, port: int) -> str:
    """``uri`` naming ``ip``:``port`` instead of its own host (the policy rewrote it to the device, DOMAIN 7.4)."""
    parts = urlsplit(uri)
    host = f"[{ip}]" if ":" in ip else ip
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))


def pick_credential(username: str | None, password: str | None, from_uri: Credential | None) -> Credential | None:
    if username:
        return Credential(username, password or "")
    return from_uri if from_uri is not None and from_uri.username else None


def login_of(
    uri: str, username: str | None, password: str | None
) -> tuple[str, Credential | None, tuple[str, ...]]:
    """The URI without its userinfo, the credential to use (the given one, else the URI's) and the secrets to keep
    out of every detail. ValueError for an unusable URI (as clean_uri)."""
    target, from_uri = clean_uri(uri)
    credential = pick_credential(username, password, from_uri)
    return target, credential, secrets_of(credential)


def secrets_of(credential: Credential | None) -> tuple[str, ...]:
    """What must never appear in a detail: the password as sent, percent-encoded, and the Basic token."""
    if credential is None or not credential.password:
        return ()
    token = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
    return (credential.password, quote(credential.password, safe=""), token)


@dataclass
class Authorizer:
    """Authorization headers for requests after one challenge; Digest counts its nonce uses."""

    credential: Credential
    signer: DigestSigner | None
    nc: int = 0

    @classmethod
    def from_challenge(cls, credential: Credential, www_authenticate: list[str]) -> Authorizer | None:
        """None when the server offers no scheme we answer (or no challenge at all)."""
        challenges = parse_digest_challenges(www_authenticate)
        if challenges:
            return cls(credential, DigestSigner(challenges[0], credential))
        if any(_BASIC.search(value) for value in www_authenticate):
            return cls(credential, None)
        return None

    @property
    def scheme(self) -> str:
        return "Digest" if self.signer is not None else "Basic"

    def header(self, method: str, uri: str) -> str:
        if self.signer is None:
            token = f"{self.credential.username}:{self.credential.password}".encode()
            return "Basic " + base64.b64encode(token).decode()
        self.nc += 1
        return self.signer.authorization(method=method, uri=uri, nc=self.nc)


def login_refused(credential: Credential | None, auth: Authorizer | None) -> str:
    """Why a final 401 stands: no credential to send, no challenge we answer, or the login we sent was rejected."""
    if credential is None:
        return "needs credentials and none are set"
    if auth is None:
        return "no Basic or Digest challenge to answer"
    return f"{auth.scheme} login rejected"


def connect_failed(exc: OSError) -> str:
    """A failed connection (other than refused) in a few words, scrubbed."""
    what = "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "connection failed"
    return scrub(f"{what} ({exc.strerror or type(exc).__name__})")
