"""The GB/T 28181 SIP parser (probes/gb28181/message.py) and MANSCDP reader (manscdp.py) on what devices send."""

from __future__ import annotations

import pytest

from probes.gb28181.manscdp import ManscdpError, catalog_query, parse_manscdp
from probes.gb28181.message import (
    MAX_BODY,
    MAX_HEADER,
    SipMessage,
    SipParseError,
    StreamFramer,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)

REGISTER = (
    b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371\r\n"
    b"From: <sip:37131100001320000001@3713110000>;tag=1234\r\n"
    b"To: <sip:37131100001320000001@3713110000>\r\n"
    b"Call-ID: 99@192.168.1.64\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:37131100001320000001@192.168.1.64:5060>\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_gb_uri_with_an_all_digit_host() -> None:
    uri = parse_uri("sip:34020000002000000001@3402000000")
    assert (uri.user, uri.host, uri.port) == ("34020000002000000001", "3402000000", None)
    uri = parse_uri("sip:37131100001320000001@192.168.1.64:5060;transport=udp")
    assert (uri.host, uri.port, uri.params) == ("192.168.1.64", 5060, {"transport": "udp"})
    addr = parse_name_addr('"罗庄" <sip:37131100001320000001@3713110000>;tag=abc')
    assert (addr.display, addr.uri.user, addr.uri.host, addr.tag) == ("罗庄", "37131100001320000001", "3713110000",
                                                                     "abc")
    bare = parse_name_addr("sip:37131100001320000001@3713110000;tag=x1")
    assert bare.uri.host == "3713110000" and bare.tag == "x1"


def test_register_parses_with_body_as_bytes() -> None:
    msg = parse_message(REGISTER + b"")
    assert msg.method == "REGISTER" and msg.uri == "sip:34020000002000000001@3402000000"
    assert msg.cseq() == (1, "REGISTER") and msg.body == b""
    via = parse_via(msg.vias()[0])
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.168.1.64", 5060, "z9hG4bK1371")
    assert "rport" in via.params and via.params["rport"] is None


def test_compact_forms_any_case_folded_lines_and_bare_lf() -> None:
    body = b'<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>Keepalive</CmdType></Notify>'
    raw = (
        b"message sip:34020000002000000001@3402000000 SIP/2.0\n"
        b"v: SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bKa,\n SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKb\n"
        b"f: <sip:37131100001320000001@3713110000>\n\t;tag=9\n"
        b"t: <sip:34020000002000000001@3402000000>\n"
        b"i: c1\nCSEQ: 20 MESSAGE\nc: Application/MANSCDP+xml\n"
        b"l: " + str(len(body)).encode() + b"\n\n" + body
    )
    msg = parse_message(raw)
    assert msg.method == "MESSAGE"
    assert msg.get("call-id") == "c1" and msg.get("i") == "c1" and msg.get("Content-Type") == "Application/MANSCDP+xml"
    assert msg.get("From") == "<sip:37131100001320000001@3713110000> ;tag=9"
    assert parse_name_addr(msg.get("From") or "").tag == "9"
    assert [parse_via(v).host for v in msg.vias()] == ["10.0.0.2", "10.0.0.3"]
    assert msg.body == body


def test_datagram_without_content_length_and_with_trailing_bytes() -> None:
    raw = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    assert parse_message(raw + b"XYZ").body == b"XYZ"  # UDP: the rest of the datagram
    assert parse_message(REGISTER + b"junk after").body == b""  # cut at Content-Length
    with pytest.raises(SipParseError):
        parse_message(REGISTER.replace(b"Content-Length: 0", b"Content-Length: 10"))  # truncated body


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\x01\x02\xff" * 50,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"REGISTER SIP/2.0\r\n\r\n",
        b"SIP/2.0 9999 Nope\r\n\r\n",
        b"REGISTER sip:x@y SIP/2.0\r\nno colon here\r\n\r\n",
        b"REGISTER sip:x@y SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"REGISTER sip:x@y SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
        b"REGISTER sip:x@y SIP/2.0\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        b"REGISTER sip:x@y SIP/2.0\r\nX: " + b"a" * (MAX_HEADER + 10) + b"\r\n\r\n",
    ],
)
def test_garbage_is_a_parse_error(garbage: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(garbage)


def test_serialise_round_trip_counts_bytes() -> None:
    msg = SipMessage(status=200, headers=[("Via", "SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx"), ("CSeq", "1 MESSAGE")],
                     body="罗庄".encode("gb2312"))
    again = parse_message(msg.to_bytes())
    assert again.status == 200 and again.reason == "OK" and again.body == "罗庄".encode("gb2312")
    assert again.get("Content-Length") == "4"


def test_stream_framer_cuts_by_content_length_in_any_chunks() -> None:
    body = b"<Notify><CmdType>Keepalive</CmdType></Notify>"
    one = REGISTER.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()) + body
    stream = b"\r\n\r\n" + one + one + b"\r\n" + one  # CRLF keep-alives between messages
    for step in (1, 7, 64, len(stream)):
        framer = StreamFramer()
        got = []
        for i in range(0, len(stream), step):
            got.extend(framer.feed(stream[i : i + step]))
        assert [m.body for m in got] == [body] * 3
        assert framer.buffered == 0


def test_stream_framer_refuses_an_endless_header_and_a_huge_body() -> None:
    framer = StreamFramer()
    framer.feed(b"REGISTER sip:x@y SIP/2.0\r\n")
    with pytest.raises(SipParseError):
        for _ in range(1000):  # bounded: the cap trips after MAX_HEADER bytes
            framer.feed(b"X-Endless: " + b"a" * 100 + b"\r\n")
    with pytest.raises(SipParseError):
        StreamFramer().feed(REGISTER.replace(b"Content-Length: 0", f"Content-Length: {MAX_BODY + 1}".encode()))
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")  # a TLS hello


CATALOG = """<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>17</SN>
<DeviceID>37131100001180000001</DeviceID>
<SumNum>3</SumNum>
<DeviceList Num="2">
<Item><DeviceID>37131100001320000001</DeviceID><Name>罗庄区政府门口</Name><Status>ON</Status></Item>
<Item><DeviceID>37131100001320000002</DeviceID><Name>通达路与沂河路交叉口</Name><Event>off</Event></Item>
</DeviceList>
</Response>
"""


def test_manscdp_by_declaration_with_gb18030_fallback() -> None:
    doc = parse_manscdp(CATALOG.encode("gb2312"))
    assert (doc.root, doc.cmd_type, doc.sn, doc.sum_num, doc.items) == ("Response", "Catalog", 17, 3, 2)
    assert doc.device_id == "37131100001180000001"
    assert doc.events == (("37131100001320000002", "OFF"),)
    # declared GB2312 but holding a GBK-only character (镕), or declared UTF-8 but GBK bytes: GB18030 reads both
    gbk = CATALOG.replace("罗庄区政府门口", "朱镕基路").encode("gbk")
    assert parse_manscdp(gbk).items == 2
    assert parse_manscdp(CATALOG.replace("GB2312", "UTF-8").encode("gbk")).items == 2
    assert parse_manscdp(CATALOG.replace(' encoding="GB2312"', "").encode("gb18030")).sn == 17
    # a stray & in a name (seen from devices) does not lose the message
    assert parse_manscdp(CATALOG.replace("门口", "门口&东").encode("gb2312")).items == 2


def test_manscdp_entities_are_not_resolved() -> None:
    evil = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<Notify><CmdType>Keepalive</CmdType><Status>&x;</Status></Notify>")
    doc = parse_manscdp(evil)
    assert doc.status is None or "root:" not in doc.status
    with pytest.raises(ManscdpError):
        parse_manscdp(b"not xml at all")
    with pytest.raises(ManscdpError):
        parse_manscdp(b"<Notify><SN>1</SN></Notify>")  # no CmdType


def test_catalog_query_body() -> None:
    doc = parse_manscdp(catalog_query(5, "37131100001180000001"))
    assert (doc.root, doc.cmd_type, doc.sn, doc.device_id) == ("Query", "Catalog", 5, "37131100001180000001")
