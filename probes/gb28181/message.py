"""A lenient SIP message parser and serialiser for GB/T 28181 signalling (RFC 3261 section 7, as devices send it).

Lenient where devices are sloppy: header names in any case and in compact form (``v``, ``f``, ``t``, ``i``, ``m``,
``l``, ``c``...), folded header lines, bare LF line ends, GB-style URIs whose host is all digits
(``sip:34020000002000000001@3402000000``), a missing Content-Length on UDP (the rest of the datagram is the body).
Strict where it matters: bodies stay bytes (their encoding is the MANSCDP reader's business), sizes are capped, and
anything that is not a SIP message raises :class:`SipParseError` (the transport drops and counts it).

:class:`StreamFramer` cuts a TCP byte stream into messages by Content-Length, with caps on the header block and the
body, so an endless header or a huge body closes the connection instead of filling memory.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_BODY",
    "MAX_HEADER",
    "NameAddr",
    "SipMessage",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Via",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
]

MAX_HEADER: Final = 16 * 1024  # the start line and headers of one message
MAX_BODY: Final = 1024 * 1024  # one body (a large Catalog page is ~100 KiB; a UDP datagram is < 64 KiB anyway)
MAX_HEADERS: Final = 100  # header lines in one message

COMPACT: Final = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
    "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event", "u": "Allow-Events",
    "r": "Refer-To", "b": "Referred-By", "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
}  # fmt: skip
_CANONICAL: Final = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Expires", "Content-Type",
        "Content-Length", "Content-Encoding", "User-Agent", "Server", "Authorization", "WWW-Authenticate",
        "Proxy-Authorization", "Proxy-Authenticate", "Allow", "Supported", "Event", "Subscription-State",
        "Date", "Subject", "Allow-Events", "Route", "Record-Route", "Accept", "Retry-After", "Warning",
    )
}  # fmt: skip
_METHOD: Final = re.compile(rb"^[A-Za-z][A-Za-z0-9._!%*+`'~-]{0,31}$")
_HEADER_NAME: Final = re.compile(r"^[A-Za-z0-9._!%*+`'~-]{1,64}$")
_REASONS: Final = {
    100: "Trying", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 481: "Call/Transaction Does Not Exist",
    489: "Bad Event", 500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
}  # fmt: skip


class SipParseError(ValueError):
    """Not a SIP message we can read (or over a cap)."""


@functools.lru_cache(maxsize=1024)
def canonical_name(name: str) -> str:
    low = name.strip().lower()
    if len(low) == 1 and low in COMPACT:
        return COMPACT[low]
    return _CANONICAL.get(low) or "-".join(part.capitalize() for part in low.split("-"))


@dataclass(slots=True)
class SipMessage:
    """A request (``method`` set) or a response (``status`` set); headers in order, names canonical."""

    method: str | None = None
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        """The first value of a header (any case or compact form), or None."""
        want = canonical_name(name)
        for key, value in self.headers:
            if key == want:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        want = canonical_name(name)
        return [value for key, value in self.headers if key == want]

    def set(self, name: str, value: str) -> None:
        want = canonical_name(name)
        self.headers = [(k, v) for k, v in self.headers if k != want]
        self.headers.append((want, value))

    def vias(self) -> list[str]:
        """Every Via value, comma-separated ones split (outside quotes)."""
        out: list[str] = []
        for value in self.get_all("Via"):
            out.extend(part for part in split_commas(value) if part)
        return out

    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; SipParseError when absent or unreadable."""
        value = self.get("CSeq") or ""
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SipParseError("bad CSeq")
        return int(parts[0]), parts[1].upper()

    def to_bytes(self) -> bytes:
        if self.method is not None:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason or _REASONS.get(self.status, 'Unknown')}"
        lines = [start]
        lines.extend(f"{k}: {v}" for k, v in self.headers if k != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def split_commas(value: str) -> list[str]:
    if "," not in value:
        return [value.strip()]
    parts: list[str] = []
    depth_quote = False
    depth_angle = 0
    start = 0
    for i, ch in enumerate(value):
        if ch == '"':
            depth_quote = not depth_quote
        elif not depth_quote and ch == "<":
            depth_angle += 1
        elif not depth_quote and ch == ">":
            depth_angle = max(0, depth_angle - 1)
        elif ch == "," and not depth_quote and depth_angle == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return parts


def _decode_head(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace")  # a display name in GBK: keep going


def parse_message(data: bytes, *, datagram: bool = True) -> SipMessage:
    """One whole message. On UDP (``datagram``) a missing Content-Length means the rest is the body, and a longer
    datagram is cut at Content-Length; a shorter one is an error (RFC 3261 18.3)."""
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty")
    cut = _head_end(data)
    if cut is None:
        if len(data) > MAX_HEADER:
            raise SipParseError("header block too large")
        head_raw, rest = data, b""
    else:
        head_raw, rest = data[: cut[0]], data[cut[1] :]
    if len(head_raw) > MAX_HEADER:
        raise SipParseError("header block too large")
    msg = _parse_head(head_raw)
    length_text = msg.get("Content-Length")
    if length_text is None:
        if not datagram and rest:
            raise SipParseError("no Content-Length")
        body = rest
    else:
        length = _content_length(length_text)
        if length > len(rest):
            raise SipParseError("body shorter than Content-Length")
        body = rest[:length]
    if len(body) > MAX_BODY:
        raise SipParseError("body too large")
    msg.body = body
    return msg


def _content_length(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 9:
        raise SipParseError("bad Content-Length")
    length = int(text)
    if length > MAX_BODY:
        raise SipParseError("body too large")
    return length


def _head_end(data: bytes) -> tuple[int, int] | None:
    """(end of headers, start of body) or None when the blank line has not come yet."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or (0 <= crlf < lf + 1):
        return crlf, crlf + 4
    return lf, lf + 2


def _parse_head(raw: bytes) -> SipMessage:
    lines = _decode_head(raw).replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    msg = _parse_start(start)
    unfolded: list[str] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and unfolded:
            unfolded[-1] += " " + line.strip()  # a folded line continues the previous header
        else:
            unfolded.append(line)
    if len(unfolded) > MAX_HEADERS:
        raise SipParseError("too many headers")
    for line in unfolded:
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _HEADER_NAME.match(name):
            raise SipParseError("bad header line")
        msg.headers.append((canonical_name(name), value.strip()))
    return msg


def _parse_start(line: str) -> SipMessage:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise SipParseError("bad start line")
    if parts[0].upper() == "SIP/2.0":
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError("bad status code")
        return SipMessage(status=int(code), reason=parts[2].strip() if len(parts) > 2 else "")
    if len(parts) != 3 or parts[2].strip().upper() != "SIP/2.0":
        raise SipParseError("bad request line")
    method = parts[0]
    if not _METHOD.match(method.encode("utf-8", errors="replace")):
        raise SipParseError("bad method")
    if not parts[1] or ":" not in parts[1]:
        raise SipParseError("bad request URI")
    return SipMessage(method=method.upper(), uri=parts[1])


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str
    user: str | None
    host: str  # all digits is fine (a GB/T 28181 domain: 3402000000)
    port: int | None
    params: dict[str, str | None]


def parse_uri(text: str) -> SipUri:
    """``sip:user@host:port;params`` leniently: any host text, a port when it is digits, headers (``?``) ignored."""
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips", "tel"):
        raise SipParseError("not a SIP URI")
    rest = rest.split("?", 1)[0]
    main, *param_parts = rest.split(";")
    params: dict[str, str | None] = {}
    for part in param_parts:
        key, eq, val = part.partition("=")
        if key.strip():
            params[key.strip().lower()] = val.strip() if eq else None
    user: str | None = None
    if "@" in main:
        user, main = main.rsplit("@", 1)
        user = user.split(":", 1)[0] or None  # a password in the URI is dropped
    host, port = _host_port(main)
    if not host:
        raise SipParseError("URI without host")
    return SipUri(scheme.lower(), user, host, port, params)


def _host_port(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):  # IPv6 reference
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    return host.strip(), port


@dataclass(frozen=True, slots=True)
class NameAddr:
    display: str
    uri: SipUri
    raw_uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(text: str) -> NameAddr:
    """``"Name" <sip:...>;tag=x`` or a bare ``sip:...;tag=x`` (then the parameters belong to the header)."""
    text = text.strip()
    display = ""
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("unclosed <")
        display = text[:lt].strip().strip('"')
        raw_uri = text[lt + 1 : gt]
        tail = text[gt + 1 :]
    else:
        raw_uri, _, tail = text.partition(";")
        tail = ";" + tail if tail else ""
    params: dict[str, str | None] = {}
    for part in tail.split(";"):
        key, eq, val = part.partition("=")
        if key.strip():
            params[key.strip().lower()] = val.strip() if eq else None
    uri = parse_uri(raw_uri)
    return NameAddr(display, uri, raw_uri.strip(), params)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str  # UDP / TCP
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def parse_via(text: str) -> Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport``."""
    proto, _, rest = text.strip().partition(" ")
    bits = proto.split("/")
    if len(bits) != 3 or bits[0].upper() != "SIP":
        raise SipParseError("bad Via")
    sent_by, *param_parts = rest.strip().split(";")
    host, port = _host_port(sent_by)
    if not host:
        raise SipParseError("Via without host")
    params: dict[str, str | None] = {}
    for part in param_parts:
        key, eq, val = part.partition("=")
        if key.strip():
            params[key.strip().lower()] = val.strip() if eq else None
    return Via(bits[2].upper(), host, port, params)


class StreamFramer:
    """Cuts a TCP stream into messages by Content-Length. :meth:`feed` returns the complete messages so far and raises
    :class:`SipParseError` on garbage, an endless header block or an oversized body (the caller closes)."""

    def __init__(self, *, max_header: int = MAX_HEADER, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._max_header = max_header
        self._max_body = max_body
        self._need: tuple[int, int, SipMessage] | None = None  # (body start, total length, head) being read

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipMessage]:
        self._buf += data
        out: list[SipMessage] = []
        while True:
            if self._need is None:
                while self._buf[:2] == b"\r\n" or self._buf[:1] == b"\n":  # keep-alive CRLFs between messages
                    del self._buf[: 2 if self._buf[:2] == b"\r\n" else 1]
                if not self._buf:
                    return out
                cut = _head_end(bytes(self._buf[: self._max_header + 4]))
                if cut is None:
                    if len(self._buf) > self._max_header:
                        raise SipParseError("header block too large")
                    return out
                if cut[0] > self._max_header:
                    raise SipParseError("header block too large")
                head = _parse_head(bytes(self._buf[: cut[0]]))
                text = head.get("Content-Length")
                length = _content_length(text) if text is not None else 0
                if length > self._max_body:
                    raise SipParseError("body too large")
                self._need = (cut[1], cut[1] + length, head)
            start, total, msg = self._need
            if len(self._buf) < total:
                return out
            msg.body = bytes(self._buf[start:total])
            del self._buf[:total]
            self._need = None
            out.append(msg)
