"""GbServer at the byte level, with raw sockets on 127.0.0.1 (what SIPp cannot show): retransmissions answered
with the same bytes without calling the directory twice, digest details (stale nonce, unknown ID, rate limit),
expiry, Via received/rport, our own retransmission of a Catalog query, subscriptions and notices, hostile input."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import threading
import time

import pytest

from probes.gb28181 import Peer, Registration
from probes.gb28181.message import SipMessage, parse_message, parse_via
from tests.gb28181 import PASSWORD, REALM, SERVER_ID, RawDevice, ServerThread, digest_header, wait_for

DEVICE = "37131100001320000001"


@pytest.fixture
def st() -> ServerThread:  # type: ignore[misc]
    with ServerThread() as running:
        yield running


def _catalog_page(device: RawDevice, sn: int, sum_num: int, ids: list[str], cseq: int, call_id: str) -> bytes:
    items = "".join(f"<Item><DeviceID>{i}</DeviceID><Name>罗庄{i[-3:]}</Name><Status>ON</Status></Item>" for i in ids)
    body = (f'<?xml version="1.0" encoding="GB2312"?><Response><CmdType>Catalog</CmdType><SN>{sn}</SN>'
            f"<DeviceID>{device.device_id}</DeviceID><SumNum>{sum_num}</SumNum>"
            f'<DeviceList Num="{len(ids)}">{items}</DeviceList></Response>').encode("gb2312")
    return device.request("MESSAGE", headers=[("Content-Type", "Application/MANSCDP+xml")], body=body,
                          call_id=call_id, cseq=cseq)


def _answer(device: RawDevice, request: SipMessage, status: int = 200) -> None:
    """A device's response to a request of the server."""
    lines = [f"SIP/2.0 {status} OK", *(f"Via: {v}" for v in request.vias()), f"From: {request.get('From')}",
             f"To: {request.get('To')};tag=dev1", f"Call-ID: {request.get('Call-ID')}",
             f"CSeq: {request.get('CSeq')}", "Content-Length: 0"]
    device.send(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_retransmitted_requests_get_the_same_bytes_and_no_second_call(st: ServerThread) -> None:
    dev = RawDevice("udp", st.port("udp"))
    try:
        first = dev.request("REGISTER", headers=[("Expires", "3600")], branch="z9hG4bK-r1", cseq=1)
        dev.send(first)
        challenge = dev.recv_raw()
        dev.send(first)  # the device did not hear the 401: the same 401 again (same nonce)
        assert dev.recv_raw() == challenge
        www = parse_message(challenge).get("WWW-Authenticate") or ""
        auth = digest_header(DEVICE, PASSWORD, www, f"sip:{SERVER_ID}@{REALM}")
        second = dev.request("REGISTER", headers=[("Expires", "3600"), ("Authorization", auth)], branch="z9hG4bK-r2",
                             cseq=2)
        dev.send(second)
        ok = dev.recv_raw()
        assert parse_message(ok).status == 200
        for _ in range(3):
            dev.send(second)
            assert dev.recv_raw() == ok
        keepalive = dev.keepalive(sn=7)
        dev.send(keepalive)
        ka = dev.recv_raw()
        dev.send(keepalive)
        assert dev.recv_raw() == ka
        d = st.directory
        assert wait_for(lambda: d.keepalives)
        time.sleep(0.1)
        assert len(d.registrations) == 1 and len(d.keepalives) == 1 and d.keepalives[0].sn == 7
        assert d.lookups == 2  # password_for once per REGISTER transaction, not per retransmission
        assert st.server.stats["retransmitted"] == 5
    finally:
        dev.close()


def test_responses_follow_via_received_and_rport(st: ServerThread) -> None:
    dev = RawDevice("udp", st.port("udp"))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(3)
    try:
        dev.send(dev.request("OPTIONS"))
        reply = dev.recv()
        via = parse_via(reply.vias()[0])
        assert via.params["received"] == "127.0.0.1" and via.params["rport"] == str(dev.port)
        # no rport: RFC 3261 18.2.2 says the Via port (here another socket's)
        raw = dev.request("OPTIONS").replace(f"127.0.0.1:{dev.port};rport;".encode(),
                                             f"127.0.0.1:{other.getsockname()[1]};".encode())
        dev.send(raw)
        assert parse_message(other.recvfrom(65535)[0]).status == 200
    finally:
        dev.close()
        other.close()


def test_invite_and_unknown_methods_get_501(st: ServerThread) -> None:
    for transport in ("udp", "tcp"):
        dev = RawDevice(transport, st.port(transport))
        try:
            for method in ("INVITE", "BYE", "FOO"):
                dev.send(dev.request(method))
                reply = dev.recv()
                assert reply.status == 501 and reply.get("Allow")
        finally:
            dev.close()


def test_unknown_id_and_wrong_password_are_403_then_rate_limited(st: ServerThread) -> None:
    unknown = RawDevice("udp", st.port("udp"), device_id="11010000001320000001")
    dev = RawDevice("udp", st.port("udp"))
    try:
        unknown.send(unknown.request("REGISTER"))
        assert unknown.recv().status == 403  # not even a challenge
        for _ in range(st.server.max_failed_auth - 1):  # with the unknown ID: max_failed_auth from this address
            assert dev.register(password="wrong").status == 403
        # now even the right password is refused without checking, for this ID and this address
        dev.send(dev.request("REGISTER"))
        reply = dev.recv()
        assert reply.status == 403 and reply.get("Retry-After")
        assert st.server.stats["rate_limited"] >= 1
        assert st.directory.registrations == []
    finally:
        unknown.close()
        dev.close()


def test_stale_nonce_gets_a_new_challenge(st: ServerThread) -> None:
    dev = RawDevice("udp", st.port("udp"))
    try:
        dev.send(dev.request("REGISTER"))
        www = dev.recv().get("WWW-Authenticate") or ""
        st.server.nonce_ttl_s = -10.0  # every nonce is now too old
        auth = digest_header(DEVICE, PASSWORD, www, f"sip:{SERVER_ID}@{REALM}")
        dev.send(dev.request("REGISTER", headers=[("Authorization", auth)]))
        reply = dev.recv()
        assert reply.status == 401 and "stale=true" in (reply.get("WWW-Authenticate") or "")
        # a forged nonce: a fresh challenge, not a check
        forged = auth.replace(re.search(r'nonce="([^"]+)"', auth).group(1), "0" * 40)  # type: ignore[union-attr]
        dev.send(dev.request("REGISTER", headers=[("Authorization", forged)]))
        assert dev.recv().status == 401
        st.server.nonce_ttl_s = 300.0
        assert dev.register().status == 200
    finally:
        dev.close()


def test_registration_expires_and_strangers_are_not_heard(st: ServerThread) -> None:
    dev = RawDevice("tcp", st.port("tcp"))
    try:
        dev.send(dev.keepalive())
        assert dev.recv().status == 403  # not registered: no keepalive event
        reply = dev.register(expires=1)
        assert reply.status == 200 and reply.get("Expires") == "1" and reply.get("Date")
        d = st.directory
        assert wait_for(lambda: d.unregistrations, timeout=5)
        assert st.server.registered_peer(DEVICE) is None and d.keepalives == []
        assert st.server.stats["expired"] == 1
    finally:
        dev.close()


def test_catalog_query_is_retransmitted_on_udp_and_pages_grouped(st: ServerThread) -> None:
    st.server.t1 = 0.1
    dev = RawDevice("udp", st.port("udp"))
    try:
        assert dev.register().status == 200
        result: dict[str, object] = {}
        asker = threading.Thread(target=lambda: result.update(answer=st.call(st.server.query_catalog(DEVICE))))
        asker.start()
        query = dev.recv_raw()  # ignored, as if lost
        again = dev.recv_raw()
        assert again == query  # timer E: the same request again
        request = parse_message(query)
        assert request.method == "MESSAGE" and request.uri.startswith(f"sip:{DEVICE}@127.0.0.1:{dev.port}")
        sn = int(re.search(rb"<SN>(\d+)</SN>", request.body).group(1))  # type: ignore[union-attr]
        _answer(dev, request)
        ids = [f"371311000013200000{i:02d}" for i in range(1, 4)]
        dev.send(_catalog_page(dev, sn, 3, ids[:2], 10, "cat-1"))
        assert dev.recv().status == 200
        dev.send(_catalog_page(dev, sn, 3, ids[2:], 11, "cat-1"))
        assert dev.recv().status == 200
        asker.join(10)
        answer = st.directory.answers[0]
        assert result["answer"] == answer
        assert (answer.sn, answer.items, answer.sum_num, answer.complete, len(answer.documents)) == (sn, 3, 3, True, 2)
        assert st.server.stats["client_retransmissions"] >= 1
    finally:
        dev.close()


def test_catalog_closed_by_the_quiet_period_is_incomplete(st: ServerThread) -> None:
    st.server.catalog_quiet_s = 0.3
    dev = RawDevice("tcp", st.port("tcp"))
    try:
        assert dev.register().status == 200
        result: dict[str, object] = {}
        asker = threading.Thread(target=lambda: result.update(answer=st.call(st.server.query_catalog(DEVICE))))
        asker.start()
        request = dev.recv()
        sn = int(re.search(rb"<SN>(\d+)</SN>", request.body).group(1))  # type: ignore[union-attr]
        _answer(dev, request)
        dev.send(_catalog_page(dev, sn, 5, ["37131100001320000001", "37131100001320000002"], 10, "cat-2"))
        assert dev.recv().status == 200
        asker.join(10)
        answer = st.directory.answers[0]
        assert result["answer"] == answer
        assert (answer.items, answer.sum_num, answer.complete) == (2, 5, False)
    finally:
        dev.close()


def test_subscription_notify_and_unsolicited_events_become_notices(st: ServerThread) -> None:
    dev = RawDevice("udp", st.port("udp"))
    try:
        assert dev.register().status == 200
        result: dict[str, object] = {}
        asker = threading.Thread(target=lambda: result.update(ok=st.call(st.server.subscribe_catalog(DEVICE, 600))))
        asker.start()
        sub = dev.recv()
        assert sub.method == "SUBSCRIBE" and (sub.get("Event") or "").startswith("Catalog")
        assert sub.get("Expires") == "600"
        _answer(dev, sub)
        asker.join(10)
        assert result["ok"] is True
        body = ('<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>Catalog</CmdType><SN>9</SN>'
                f"<DeviceID>{DEVICE}</DeviceID><SumNum>2</SumNum><DeviceList Num=\"2\">"
                "<Item><DeviceID>37131100001320000007</DeviceID><Event>OFF</Event></Item>"
                "<Item><DeviceID>37131100001320000008</DeviceID><Event>vlost</Event></Item>"
                "</DeviceList></Notify>").encode("gb2312")
        dev.send(dev.request("NOTIFY", headers=[("Event", "Catalog"), ("Subscription-State", "active")], body=body))
        assert dev.recv().status == 200
        dev.send(dev.request("MESSAGE", body=body.replace(b"<SN>9<", b"<SN>10<"), call_id="unsolicited"))
        assert dev.recv().status == 200
        d = st.directory
        assert wait_for(lambda: len(d.notices) == 2)
        assert d.notices[0].events == (("37131100001320000007", "OFF"), ("37131100001320000008", "VLOST"))
        assert d.notices[0].document == body and d.answers == []
    finally:
        dev.close()


def test_hostile_input_is_dropped_and_counted(st: ServerThread) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for junk in (b"\x00\xff" * 700, b"GET / HTTP/1.0\r\n\r\n", b"REGISTER x\r\n\r\n", b"\r\n\r\n"):
            for _ in range(50):
                udp.sendto(junk, ("127.0.0.1", st.port("udp")))
        assert wait_for(lambda: st.server.stats["dropped"] >= 150)
        closed = []
        for attack in (
            b"REGISTER sip:a@b SIP/2.0\r\n" + b"X-Endless: " + b"a" * 40_000,
            b"REGISTER sip:a@b SIP/2.0\r\nContent-Length: 50000000\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" * 10 + b"\r\n\r\n",
        ):
            conn = socket.create_connection(("127.0.0.1", st.port("tcp")), timeout=3)
            try:
                conn.sendall(attack)
                closed.append(conn.recv(100) == b"")  # the server hangs up, it does not wait
            except ConnectionResetError:
                closed.append(True)
            finally:
                conn.close()
        assert closed == [True, True, True] and st.server.stats["tcp_closed"] == 3
        # still serving both transports
        for transport in ("udp", "tcp"):
            dev = RawDevice(transport, st.port(transport))
            try:
                assert dev.register().status == 200
            finally:
                dev.close()
    finally:
        udp.close()


def test_no_password_or_digest_answer_in_logs(st: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dev = RawDevice("udp", st.port("udp"))
    try:
        dev.send(dev.request("REGISTER"))
        www = dev.recv().get("WWW-Authenticate") or ""
        auth = digest_header(DEVICE, "wrong-pw-9", www, f"sip:{SERVER_ID}@{REALM}")
        dev.send(dev.request("REGISTER", headers=[("Authorization", auth)]))
        assert dev.recv().status == 403
        assert dev.register().status == 200
        response = re.search(r'response="([0-9a-f]+)"', auth).group(1)  # type: ignore[union-attr]
        assert "refused" in caplog.text  # something was logged...
        assert PASSWORD not in caplog.text and "wrong-pw-9" not in caplog.text and response not in caplog.text
    finally:
        dev.close()


def test_catalog_pages_before_the_200_and_late_pages_ignored(st: ServerThread) -> None:
    dev = RawDevice("udp", st.port("udp"))
    try:
        assert dev.register().status == 200
        result: dict[str, object] = {}
        asker = threading.Thread(target=lambda: result.update(answer=st.call(st.server.query_catalog(DEVICE))))
        started = time.monotonic()
        asker.start()
        request = dev.recv()
        sn = int(re.search(rb"<SN>(\d+)</SN>", request.body).group(1))  # type: ignore[union-attr]
        page = _catalog_page(dev, sn, 1, ["37131100001320000001"], 10, "cat-3")
        dev.send(page)  # the answer, and never a 200 to the query: the answer is enough
        assert dev.recv().status == 200
        asker.join(10)
        assert time.monotonic() - started < 5  # not the 32 s of timer F
        assert result["answer"] == st.directory.answers[0] and st.directory.answers[0].complete
        again = _catalog_page(dev, sn, 1, ["37131100001320000001"], 11, "cat-3")
        dev.send(again)  # the same page in a new transaction, as if the query had been seen twice
        assert dev.recv().status == 200
        assert wait_for(lambda: st.server.stats["catalog_late"] == 1)
        assert len(st.directory.answers) == 1
    finally:
        dev.close()


def test_restored_registration_is_heard_without_registering_again(st: ServerThread) -> None:
    """After a restart the application hands back what it kept: keepalives are heard at once, not 403 until the
    device registers again; an expired one is not taken back."""
    dev = RawDevice("udp", st.port("udp"))
    try:
        now = dt.datetime.now(dt.UTC)
        peer = Peer("udp", "127.0.0.1", dev.port)
        old = Registration("37131100001320000009", REALM, peer, 60, now - dt.timedelta(seconds=61))
        assert st.server.restore(old) is False
        assert st.server.restore(Registration(DEVICE, REALM, peer, 3600, now - dt.timedelta(seconds=60))) is True
        assert st.server.registered_peer(DEVICE) == peer
        dev.send(dev.keepalive(sn=3))
        assert dev.recv().status == 200
        assert wait_for(lambda: st.directory.keepalives)
        assert st.directory.registrations == []  # restoring reports nothing
    finally:
        dev.close()


def test_mutated_messages_never_break_the_server(st: ServerThread) -> None:
    """2,000 datagrams mutated from valid ones (seeded): each is answered, dropped or counted, none raises inside
    the server (stats["errors"] stays 0), and a device still registers afterwards."""
    import random

    dev = RawDevice("udp", st.port("udp"))
    try:
        assert dev.register().status == 200
        seeds = [
            dev.keepalive(),
            dev.request("REGISTER", headers=[("Contact", "<sip:a@b>;expires=5"), ("Authorization",
                        'Digest username="37131100001320000001", realm="x", nonce="abc", uri="sip:x", response="0"')]),
            dev.request("NOTIFY", body=b"<Notify><CmdType>Catalog</CmdType><SN>1</SN><DeviceList><Item>"
                        b"<DeviceID>1</DeviceID><Event>ON</Event></Item></DeviceList></Notify>"),
            _catalog_page(dev, 77, 9, ["37131100001320000001"], 5, "fuzz"),
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nCSeq: 1 MESSAGE\r\n\r\n",
        ]
        rnd = random.Random(28181)
        inserts = [b":", b";", b"<", b">", b"\r\n", b" ", b",", b'"', b"=", b"@", b"\r\n ", b"sip:", b"\x00", b"\xff"]
        for _ in range(2000):
            m = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(1, 8)):
                pos = rnd.randrange(len(m))
                op = rnd.random()
                if op < 0.4:
                    m[pos] = rnd.randrange(256)
                elif op < 0.6:
                    del m[pos : pos + rnd.randint(1, 20)]
                elif op < 0.8:
                    m[pos:pos] = rnd.choice(inserts)
                else:
                    m[pos:pos] = m[rnd.randrange(len(m)) :][:30]
            dev.send(bytes(m))
        stats = st.server.stats
        seen = -1
        while sum(stats.values()) != seen:  # until the server has gone through what reached it (bounded by count)
            seen = sum(stats.values())
            time.sleep(0.2)
        assert stats["errors"] == 0 and stats["dropped"] > 0
        # still serving: from another loopback address (the fuzz's failed logins may have rate-limited this one)
        other = RawDevice("udp", st.port("udp"), device_id="37131100001320000002", bind="127.0.0.2")
        try:
            assert other.register().status == 200
        finally:
            other.close()
    finally:
        dev.close()
