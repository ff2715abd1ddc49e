"""The namespaced extension that carries, inside each GB/T 28181 Catalog ``<Item>``, what the standard has no
element for: the department number, what ONVIF reports (serial, endpoint, stream and snapshot URIs, ...) and the
ledger's extra columns. So a catalog export re-imports without loss.

    <Item>
      <DeviceID>..</DeviceID> ... <Info>..</Info>
      <vms:Ext xmlns:vms="urn:vms:catalog-ext:1">
        <vms:local_id>LZ-0001</vms:local_id>
        <vms:snapshot_uri>http://..</vms:snapshot_uri>
        <vms:Extra key="备注">..</vms:Extra>
      </vms:Ext>
    </Item>

The element lives in its own namespace, last in the Item, so a platform that follows the standard finds every
standard element where it expects it and skips an element it does not know (GB/T 28181 reserves extension
elements for vendors the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lxml import etree

from vms.catalog.fields import FIELDS

__all__ = ["EXT_FIELDS", "EXT_NS", "EXT_TAG", "ext_element", "read_ext"]

EXT_NS = "urn:vms:catalog-ext:1"
EXT_TAG = f"{{{EXT_NS}}}Ext"
_EXTRA_TAG = f"{{{EXT_NS}}}Extra"
# The record's fields that have no catalog element, in registry order.
EXT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if not f.xml)
_EXT_FIELD_SET = frozenset(EXT_FIELDS)


def ext_element(record: Mapping[str, Any], extra: Mapping[str, Any], text: Callable[[Any], str]) -> Any | None:
    """The ``<vms:Ext>`` element of one record (None when there is nothing to carry); ``text`` renders values
    the way the rest of the catalog does."""
    fields = [(name, record.get(name)) for name in EXT_FIELDS]
    fields = [(name, value) for name, value in fields if value is not None and value != ""]
    extras = [(str(key), value) for key, value in extra.items() if value is not None and value != ""]
    if not fields and not extras:
        return None
    ext = etree.Element(EXT_TAG, nsmap={"vms": EXT_NS})
    for name, value in fields:
        etree.SubElement(ext, f"{{{EXT_NS}}}{name}").text = text(value)
    for key, value in extras:
        # Column names are free text ("备注", "安装高度(米)", "column 12"): an attribute, not an element name.
        etree.SubElement(ext, _EXTRA_TAG, key=text(key)).text = text(value)
    return ext


def read_ext(ext: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(field, raw text) pairs and the extra columns carried by one ``<vms:Ext>`` element.

    An element this version does not know (a later version's field) is kept as an extra column, not lost.
    """
    values: list[tuple[str, str]] = []
    extra: dict[str, str] = {}
    for child in ext:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # comments, processing instructions
        text = (child.text or "").strip()
        if not text:
            continue
        local = etree.QName(tag).localname
        if tag == _EXTRA_TAG:
            key = (child.get("key") or "").strip()
            if key:
                extra.setdefault(key, text)
        elif local in _EXT_FIELD_SET:
            values.append((local, text))
        else:
            extra.setdefault(local, text)
    return values, extra
