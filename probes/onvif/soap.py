"""SOAP envelopes, ONVIF operations and reply parsing with lxml.

Requests are prebuilt strings (SOAP 1.2 unless a device forces 1.1). Replies are parsed by local name only:
prefixes and even namespace versions vary between vendors (tt/tds/trt/tr2, env/s/SOAP-ENV), and a SOAP 1.2
body may come labelled as SOAP 1.1 or the reverse (DOMAIN 7.9), so the content type is never trusted.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, cast
from xml.sax.saxutils import escape

from lxml import etree

from probes.errors import Cause

__all__ = [
    "NS",
    "TAG_LOCAL_NAMES",
    "Fault",
    "MalformedReply",
    "Operation",
    "Ops",
    "Reply",
    "SoapVersion",
    "all_text",
    "build_envelope",
    "child",
    "children",
    "descendant",
    "descendants",
    "fault_cause",
    "lenient_text",
    "local",
    "parse_reply",
    "parse_xml",
    "path",
    "plain_envelope",
    "request_header_lines",
    "request_headers",
    "status_cause",
    "text_of",
]

SoapVersion = Literal["1.2", "1.1"]

NS: Final = {
    "s12": "http://www.w3.org/2003/05/soap-envelope",
    "s11": "http://schemas.xmlsoap.org/soap/envelope/",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}

_ENVELOPE_NS: Final = {"1.2": NS["s12"], "1.1": NS["s11"]}
_SOAP_OF_ENVELOPE: Final[dict[str, SoapVersion]] = {
    f"{{{NS['s12']}}}Envelope": "1.2",
    f"{{{NS['s11']}}}Envelope": "1.1",
}
_ENVELOPE: Final = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<s:Envelope xmlns:s="{ns}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>'
)

# Billion-laughs and XXE safe; the size cap is enforced while reading the HTTP body.
_STRICT_PARSER: Final = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False, remove_comments=True
)
_RECOVER_PARSER: Final = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    huge_tree=False,
    load_dtd=False,
    remove_comments=True,
    recover=True,
    encoding="utf-8",
)
# Characters XML 1.0 forbids; firmware strings (serials read from EEPROM) sometimes contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")
_BARE_AMPERSAND = re.compile(r"&(?!(?:#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z_][\w.-]*);)")


@dataclass(frozen=True, slots=True)
class Operation:
    """One ONVIF request: ``name`` doubles as the step name in results."""

    name: str
    action: str
    body: str


def _op(service_ns: str, name: str, inner: str = "") -> Operation:
    body = f'<{name} xmlns="{service_ns}">{inner}</{name}>' if inner else f'<{name} xmlns="{service_ns}"/>'
    return Operation(name, f"{service_ns}/{name}", body)


class Ops:
    """Prebuilt request bodies (the expensive part of a zeep call is building these from WSDL)."""

    GET_SYSTEM_DATE_AND_TIME: Final = _op(NS["tds"], "GetSystemDateAndTime")
    GET_DEVICE_INFORMATION: Final = _op(NS["tds"], "GetDeviceInformation")
    # With the capabilities: the device service's Security flags say which login to send first (no anonymous try
    # that only earns a 401), the media services' SnapshotUri flags whether GetSnapshotUri is worth a request.
    GET_SERVICES: Final = _op(NS["tds"], "GetServices", "<IncludeCapability>true</IncludeCapability>")
    GET_CAPABILITIES: Final = _op(NS["tds"], "GetCapabilities", "<Category>All</Category>")
    GET_SCOPES: Final = _op(NS["tds"], "GetScopes")
    GET_NETWORK_INTERFACES: Final = _op(NS["tds"], "GetNetworkInterfaces")
    GET_HOSTNAME: Final = _op(NS["tds"], "GetHostname")
    MEDIA_GET_PROFILES: Final = _op(NS["trt"], "GetProfiles")
    # Media2 returns bare profiles unless asked for their configurations.
    MEDIA2_GET_PROFILES: Final = _op(NS["tr2"], "GetProfiles", "<Type>All</Type>")

    # Per-token operations are cached: tokens repeat across devices ("Profile_1", "MainStream", "000"...), so the
    # same Operation (and its cached envelope, see plain_envelope) serves the whole fleet.

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def media_stream_uri(token: str) -> Operation:
        inner = (
            f'<StreamSetup><Stream xmlns="{NS["tt"]}">RTP-Unicast</Stream>'
            f'<Transport xmlns="{NS["tt"]}"><Protocol>RTSP</Protocol></Transport></StreamSetup>'
            f"<ProfileToken>{escape(token)}</ProfileToken>"
        )
        return _op(NS["trt"], "GetStreamUri", inner)

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def media_snapshot_uri(token: str) -> Operation:
        return _op(NS["trt"], "GetSnapshotUri", f"<ProfileToken>{escape(token)}</ProfileToken>")

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def media2_stream_uri(token: str, protocol: str = "RtspUnicast") -> Operation:
        inner = f"<Protocol>{escape(protocol)}</Protocol><ProfileToken>{escape(token)}</ProfileToken>"
        return Operation("Media2.GetStreamUri", f"{NS['tr2']}/GetStreamUri", _op(NS["tr2"], "GetStreamUri", inner).body)

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def media2_snapshot_uri(token: str) -> Operation:
        body = _op(NS["tr2"], "GetSnapshotUri", f"<ProfileToken>{escape(token)}</ProfileToken>").body
        return Operation("Media2.GetSnapshotUri", f"{NS['tr2']}/GetSnapshotUri", body)


# _ENVELOPE up to the header, per SOAP version: a signed request is then one f-string (str.format parses its
# template on every call, ~0.7 us more).
_ENVELOPE_HEAD: Final = {soap: _ENVELOPE.partition("{header}")[0].format(ns=ns) for soap, ns in _ENVELOPE_NS.items()}


def build_envelope(op: Operation, *, header: str = "", soap: SoapVersion = "1.2") -> bytes:
    return f"{_ENVELOPE_HEAD[soap]}{header}</s:Header><s:Body>{op.body}</s:Body></s:Envelope>".encode()


@functools.lru_cache(maxsize=4096)
def plain_envelope(op: Operation, soap: SoapVersion = "1.2") -> bytes:
    """The envelope without a security header (anonymous and HTTP digest calls), built once per operation."""
    return build_envelope(op, soap=soap)


def request_headers(op: Operation, soap: SoapVersion = "1.2") -> dict[str, str]:
    if soap == "1.2":
        return {"Content-Type": f'application/soap+xml; charset=utf-8; action="{op.action}"'}
    return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{op.action}"'}


@functools.lru_cache(maxsize=1024)
def request_header_lines(action: str, soap: SoapVersion = "1.2") -> bytes:
    """:func:`request_headers` as encoded HTTP header lines, built once per action."""
    if soap == "1.2":
        return f'Content-Type: application/soap+xml; charset=utf-8; action="{action}"\r\n'.encode()
    return f'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: "{action}"\r\n'.encode()


# --- element helpers: match by local name ------------------------------------------------------------------
# lxml's "{*}name" tag filter matches a local name in any namespace or none, in C: far cheaper than comparing local
# names in Python. A recovering parse can leave undeclared prefixes in tags ("tt:Name", no namespace);
# parse_xml renames those to their local names, so the filters hold for every tree it returns.


_LOCAL_NAMES: dict[str, str] = {}  # tag -> local name; a few hundred distinct tags cover every vendor
TAG_LOCAL_NAMES: Final = _LOCAL_NAMES  # hot loops: ``TAG_LOCAL_NAMES.get(tag) or local(tag)``, no call per element
_ANY_NS: dict[str, str] = {}  # local name -> "{*}name"


def local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""  # comment or processing instruction
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        name = tag.rpartition("}")[2] if tag.startswith("{") else tag.rpartition(":")[2]
        if len(_LOCAL_NAMES) < 4096:  # bounded: a hostile device cannot grow it without limit
            _LOCAL_NAMES[tag] = name
    return name


def _any_ns(name: str) -> str:
    wildcard = _ANY_NS.get(name)
    if wildcard is None:
        wildcard = "{*}" + name
        if len(_ANY_NS) < 4096:
            _ANY_NS[name] = wildcard
    return wildcard


def child(el: Any, name: str) -> Any:
    if el is None:
        return None
    for sub in el.iterchildren(_ANY_NS.get(name) or _any_ns(name)):
        return sub
    return None


def children(el: Any, name: str) -> list[Any]:
    if el is None:
        return []
    return list(el.iterchildren(_any_ns(name)))


def descendants(el: Any, name: str) -> Iterator[Any]:
    if el is None:
        return iter(())
    return cast(Iterator[Any], el.iterdescendants(_any_ns(name)))


def descendant(el: Any, name: str) -> Any:
    if el is None:
        return None
    for sub in el.iterdescendants(_any_ns(name)):
        return sub
    return None


def _strip_undeclared_prefixes(root: Any) -> None:
    """After a recovering parse: "tt:Name" (prefix never declared, so no namespace) becomes "Name"."""
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and ":" in tag and not tag.startswith("{"):
            el.tag = tag.rpartition(":")[2]


def text_of(el: Any) -> str | None:
    """The element's own text. Not its descendants': after a recovering parse an unclosed element swallows
    its siblings (``<FirmwareVersion>1.0<SerialNumber>..``) and must not absorb their text."""
    if el is None or el.text is None:
        return None
    value = el.text.strip()
    return value or None


def all_text(el: Any) -> str | None:
    """Text of the element and its descendants (fault details)."""
    if el is None:
        return None
    value = " ".join(t.strip() for t in el.itertext() if t.strip())
    return value or None


def path(el: Any, *names: str) -> Any:
    """Follow direct children by local name."""
    for name in names:
        el = child(el, name)
        if el is None:
            return None
    return el


# --- replies -------------------------------------------------------------------------------------------------


class MalformedReply(ValueError):
    """Nothing usable could be recovered from a reply body."""


@dataclass(frozen=True, slots=True)
class Fault:
    code: str  # local name of the top code: Sender/Receiver/VersionMismatch (1.2), Client/Server (1.1)
    subcodes: tuple[str, ...]  # local names, outermost first (ter:NotAuthorized -> "NotAuthorized")
    reason: str

    @property
    def names(self) -> tuple[str, ...]:
        return (self.code, *self.subcodes)

    def __str__(self) -> str:
        codes = "/".join(c for c in self.names if c)
        return f"{codes}: {self.reason}" if self.reason else codes


class Reply(NamedTuple):  # one per call: a tuple is cheaper to build than a frozen dataclass
    payload: Any  # first element in Body (lxml element) or None for an empty success body
    fault: Fault | None
    soap: SoapVersion | None  # version of the envelope actually received
    recovered: bool  # body needed a lenient decode or a recovering parse (DOMAIN 7.9)


def _qname_local(value: str | None) -> str:
    return (value or "").strip().rpartition(":")[2]


def _parse_fault(fault_el: Any) -> Fault:
    code_el = child(fault_el, "Code")
    if code_el is not None:  # SOAP 1.2
        code = _qname_local(text_of(child(code_el, "Value")))
        subcodes: list[str] = []
        sub = child(code_el, "Subcode")
        while sub is not None and len(subcodes) < 8:
            subcodes.append(_qname_local(text_of(child(sub, "Value"))))
            sub = child(sub, "Subcode")
        reason_el = child(fault_el, "Reason")
        reason = all_text(child(reason_el, "Text")) or all_text(reason_el) or ""
    else:  # SOAP 1.1: faultcode may itself be the specific code, e.g. wsse:FailedAuthentication
        raw = _qname_local(text_of(child(fault_el, "faultcode")))
        code, subcodes = raw, []
        if raw not in ("Client", "Server", "VersionMismatch", "MustUnderstand"):
            code, subcodes = "Client", [raw]
        reason = text_of(child(fault_el, "faultstring")) or ""
    detail = all_text(child(fault_el, "Detail")) or all_text(child(fault_el, "detail"))
    if detail and detail not in reason:
        reason = f"{reason} ({detail})" if reason else detail
    return Fault(code, tuple(s for s in subcodes if s), reason)


def _gb18030_or_replace(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: read an invalid UTF-8 spot as a GB18030 character if it is one, else U+FFFD.

    Chinese firmwares write GBK/GB18030 device names into documents declared UTF-8 (DOMAIN 7.9)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    raw, start = exc.object, exc.start
    for size in (2, 4):
        chunk = raw[start : start + size]
        if len(chunk) == size and 0x81 <= chunk[0] <= 0xFE:
            try:
                return bytes(chunk).decode("gb18030"), start + size
            except UnicodeDecodeError:
                continue
    return "\ufffd", start + 1


codecs.register_error("vms-gb18030-or-replace", _gb18030_or_replace)


def lenient_text(data: bytes) -> str:
    """Decode a reply that is not valid UTF-8, keeping every valid part; stray GB18030 characters are read as
    such, anything else becomes U+FFFD. XML-invalid control characters and bare '&' are neutralised."""
    text = data.decode("utf-8", errors="vms-gb18030-or-replace")
    text = _XML_INVALID.sub("\ufffd", text)
    return _BARE_AMPERSAND.sub("&amp;", text)


def parse_xml(data: bytes) -> tuple[Any, bool]:
    """(root element, recovered): strict parse first, then a lenient decode and a recovering parse."""
    try:
        return etree.fromstring(data, _STRICT_PARSER), False
    except etree.XMLSyntaxError:
        pass
    # The declaration may name an encoding the bytes do not follow; we re-encode as UTF-8 ourselves.
    text = lenient_text(_XML_DECL.sub(b"", data, count=1))
    try:
        root = etree.fromstring(text.encode("utf-8"), _RECOVER_PARSER)
    except etree.XMLSyntaxError as exc:
        raise MalformedReply(f"unparseable XML: {exc}") from None
    if root is None:
        raise MalformedReply("unparseable XML")
    _strip_undeclared_prefixes(root)
    return root, True


def parse_reply(data: bytes) -> Reply:
    """Parse a SOAP reply of either version. Raises :class:`MalformedReply` when no envelope survives."""
    if not data or data.isspace():
        return Reply(None, None, None, False)
    root, recovered = parse_xml(data)
    tag = root.tag
    if local(tag) != "Envelope":
        raise MalformedReply(f"not a SOAP envelope (root element {local(tag) or '?'})")
    soap = _SOAP_OF_ENVELOPE.get(tag)
    # Body is the last child almost always, its payload the first: index before searching.
    body = root[-1] if len(root) and local(root[-1].tag) == "Body" else child(root, "Body")
    if body is None:
        raise MalformedReply("SOAP envelope without Body")
    payload = body[0] if len(body) and isinstance(body[0].tag, str) else next(
        (el for el in body if isinstance(el.tag, str)), None
    )
    if payload is not None and local(payload.tag) == "Fault":
        return Reply(None, _parse_fault(payload), soap, recovered)
    return Reply(payload, None, soap, recovered)



# --- fault classification ------------------------------------------------------------------------------------

_AUTH_CODES: Final = frozenset(
    {
        "NotAuthorized",  # ONVIF ter:NotAuthorized under env:Sender
        "FailedAuthentication",  # WS-Security 1.0
        "InvalidSecurityToken",
        "InvalidSecurity",
        "FailedCheck",
        "SecurityTokenUnavailable",
        "UnsupportedSecurityToken",
        "Unauthorized",
        "AccessDenied",
    }
)
_NOT_SUPPORTED_CODES: Final = frozenset(
    {"ActionNotSupported", "NotImplemented", "NoSuchService", "ServiceNotSupported", "OperationNotSupported"}
)
_AUTH_TEXT: Final = re.compile(
    r"not\s+authori[sz]ed|unauthori[sz]ed|authenticat\w*\s+(?:fail|error)|invalid\s+(?:user|password|credential)"
    r"|wrong\s+(?:user|password)|password\s+(?:error|incorrect|invalid)|account\s+locked|locked\s+out",
    re.IGNORECASE,
)
# gSOAP, the stack inside many cameras, answers an unknown operation with
# "Method 'tds:GetServices' not implemented: method name or namespace not recognized".
_NOT_SUPPORTED_TEXT: Final = re.compile(
    r"not\s+implemented|not\s+supported|unsupported|not\s+recogni[sz]ed|unknown\s+(?:method|operation|action)"
    r"|no\s+such\s+(?:method|operation)|no\s+handler",
    re.IGNORECASE,
)


def fault_cause(fault: Fault) -> Cause:
    names = set(fault.names)
    if names & _AUTH_CODES:
        return Cause.AUTH
    if "MessageExpired" in names:
        return Cause.CLOCK_SKEW  # WS-Security: Created outside the device's window
    if names & _NOT_SUPPORTED_CODES:
        return Cause.NOT_SUPPORTED
    if _AUTH_TEXT.search(fault.reason):
        return Cause.AUTH
    if _NOT_SUPPORTED_TEXT.search(fault.reason):
        return Cause.NOT_SUPPORTED
    return Cause.PROTOCOL


def status_cause(status: int) -> Cause:
    """Cause of an HTTP error status that came without a usable SOAP fault."""
    if status in (401, 403):
        return Cause.AUTH  # 403: some vendors block the client after failed logins
    if status in (404, 501):
        return Cause.NOT_SUPPORTED  # service path absent, e.g. Media2 on an old firmware
    return Cause.HTTP_ERROR
