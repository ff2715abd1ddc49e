"""MANSCDP bodies (GB/T 28181 application XML): the few fields the SIP server reads itself, and the queries it sends.

Decoding: by the XML declaration first (lxml; devices declare GB2312 and mostly mean GBK), and when that fails, the
bytes decoded as GB18030 (a superset of GB2312 and GBK) and parsed again with recovery, so a device's Chinese names
or a stray ``&`` do not lose the message. The parser never resolves entities nor touches the network.
The documents themselves are handed on as bytes: the application reads the catalog fields with its own reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from lxml import etree

__all__ = ["ManscdpDoc", "ManscdpError", "catalog_query", "parse_manscdp"]

_STRICT: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_RECOVER: Final = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True
)
_DECLARATION: Final = re.compile(rb"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ENCODING: Final = re.compile(rb"encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']", re.IGNORECASE)


class ManscdpError(ValueError):
    """Not a MANSCDP document we can read."""


@dataclass(frozen=True, slots=True)
class ManscdpDoc:
    root: str  # Query / Response / Notify / Control
    cmd_type: str  # as written (compare with .lower())
    sn: int | None
    device_id: str | None
    sum_num: int | None
    status: str | None
    items: int  # <Item>s in <DeviceList>
    events: tuple[tuple[str, str], ...]  # (item DeviceID, Event upper-case) for items that carry an <Event>


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return (tag.rsplit("}", 1)[-1] if "}" in tag else tag).lower()


def _child_text(element: etree._Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            text = (child.text or "").strip()
            return text or None
    return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 12 else None


def _root(body: bytes) -> etree._Element:
    body = body.strip()
    if not body:
        raise ManscdpError("empty body")
    try:
        return etree.fromstring(body, _STRICT)
    except (etree.XMLSyntaxError, ValueError, LookupError):
        pass
    declared = _DECLARATION.match(body)
    encoding = None
    if declared:
        found = _ENCODING.search(declared.group(0))
        encoding = found.group(1).decode("ascii") if found else None
    text: str | None = None
    if encoding and encoding.lower() not in ("gb2312", "gbk", "gb18030"):
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            text = None
    if text is None:
        try:
            text = body.decode("utf-8") if encoding is None else None
        except UnicodeDecodeError:
            text = None
    if text is None:
        text = body.decode("gb18030", errors="replace")
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, flags=re.IGNORECASE)
    try:
        root = etree.fromstring(text.encode("utf-8"), _RECOVER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ManscdpError(f"unreadable XML: {exc}") from None
    if root is None:
        raise ManscdpError("unreadable XML")
    return root


def parse_manscdp(body: bytes) -> ManscdpDoc:
    root = _root(body)
    fields: dict[str, str | None] = {}
    items = 0
    events: list[tuple[str, str]] = []
    for child in root:
        name = _local(child.tag)
        if name != "devicelist":
            if name not in fields:
                fields[name] = (child.text or "").strip() or None
            continue
        for item in child:
            if _local(item.tag) != "item":
                continue
            items += 1
            event = _child_text(item, "event")
            if event:
                item_id = _child_text(item, "deviceid")
                if item_id:
                    events.append((item_id, event.upper()))
    cmd_type = fields.get("cmdtype")
    if cmd_type is None:
        raise ManscdpError("no CmdType")
    return ManscdpDoc(
        root=_local(root.tag).capitalize(),
        cmd_type=cmd_type,
        sn=_int(fields.get("sn")),
        device_id=fields.get("deviceid"),
        sum_num=_int(fields.get("sumnum")),
        status=fields.get("status"),
        items=items,
        events=tuple(events),
    )


def catalog_query(sn: int, device_id: str) -> bytes:
    """The Catalog query body (GB/T 28181 A.2.4.4), GB2312 as devices expect."""
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n'
        "<Query>\r\n<CmdType>Catalog</CmdType>\r\n"
        f"<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n</Query>\r\n"
    ).encode("gb2312")
