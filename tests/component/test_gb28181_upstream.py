"""GB/T 28181 cascade upward (probes.gb28181.upstream.GbUpstream): vms registers to an upper platform, keeps
alive and answers its Catalog queries in batches. The upper platform is SIPp with our own scenario
(tests/data/sipp/uas_upstream.xml) over UDP and TCP, and our own GbServer (a real registrar: digest, 403, Catalog
grouping by SN) for what SIPp cannot count. 127.0.0.1 only; ports chosen by the system or per test."""

from __future__ import annotations

import asyncio
import math
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from probes.gb28181.manscdp import parse_manscdp
from probes.gb28181.message import SipMessage, parse_message
from probes.gb28181.upstream import GbUpstream, UpstreamConfig, catalog_bodies
from tests.gb28181 import SIPP_DIR, MemoryDirectory, ServerThread, sipp_binary, wait_for
from tests.services import free_port

LOCAL_ID = "37131100002000000001"
LOCAL_DOMAIN = "3713110000"
UP_ID = "37000000002000000001"
UP_DOMAIN = "3700000000"
UP_PASSWORD = "upstream-pw-1"


def item(n: int, name: str | None = None) -> str:
    return (f"<Item><DeviceID>371311000013200{n:05d}</DeviceID><Name>{name or f'路口{n}号'}</Name>"
            f"<Manufacturer>Hikvision</Manufacturer><CivilCode>371311</CivilCode><Status>ON</Status></Item>")


def config(port: int, transport: str = "udp", **over: object) -> UpstreamConfig:
    base: dict[str, object] = dict(
        local_id=LOCAL_ID, local_domain=LOCAL_DOMAIN, upstream_id=UP_ID, upstream_domain=UP_DOMAIN,
        host="127.0.0.1", port=port, transport=transport, password=UP_PASSWORD, keepalive_interval_s=0.4,
        batch=3, retry_min_s=0.3, retry_max_s=2.0, t1=0.1,
    )
    base.update(over)
    return UpstreamConfig(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("n", [0, 1, 3, 10, 31])
def test_catalog_bodies_batches_share_the_sn_and_announce_the_total(n: int) -> None:
    items = [item(i) for i in range(n)]
    bodies = catalog_bodies(items, sn=77, device_id=LOCAL_ID, batch=3)
    assert len(bodies) == max(1, math.ceil(n / 3))
    docs = [parse_manscdp(b) for b in bodies]
    assert {d.sn for d in docs} == {77}
    assert {d.sum_num for d in docs} == {n}
    assert sum(d.items for d in docs) == n
    assert all(d.root == "Response" and d.cmd_type == "Catalog" for d in docs)
    assert all(len(b) < 1300 for b in bodies)


def test_catalog_bodies_encoding_gb2312_or_utf8() -> None:
    items = [item(1, "罗庄区 路口一号"), item(2, "𠀀 outside GBK")]
    gb = catalog_bodies(items, sn=1, device_id=LOCAL_ID, batch=4, encoding="GB2312")[0]
    assert gb.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert "罗庄区 路口一号".encode("gb2312") in gb
    assert b"&#131072;" in gb  # a character GBK lacks goes as a character reference, readable by any XML reader
    utf = catalog_bodies(items, sn=1, device_id=LOCAL_ID, batch=4, encoding="UTF-8")[0]
    assert utf.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "罗庄区 路口一号".encode() in utf and "𠀀".encode() in utf
    assert parse_manscdp(gb).items == parse_manscdp(utf).items == 2


def test_catalog_bodies_stay_under_the_udp_size() -> None:
    big = [item(i, "名" * 150) for i in range(6)]  # ~450 bytes an item in GBK
    bodies = catalog_bodies(big, sn=5, device_id=LOCAL_ID, batch=4, max_body=1300)
    assert len(bodies) > math.ceil(6 / 4)  # size, not the batch, decided
    assert all(len(b) <= 1300 for b in bodies)
    assert sum(parse_manscdp(b).items for b in bodies) == 6
    whole = catalog_bodies(big, sn=5, device_id=LOCAL_ID, batch=4, max_body=None)  # TCP: the batch only
    assert len(whole) == 2


# ---------------------------------------------------------------------------------------------- against GbServer


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registers_keeps_alive_and_answers_catalog_in_batches(transport: str) -> None:
    directory = MemoryDirectory(passwords={LOCAL_ID: UP_PASSWORD})
    items = [item(i) for i in range(8)]
    with ServerThread(directory, catalog_quiet_s=2.0) as srv:
        client = GbUpstream(config(srv.port(transport), transport), lambda: items)
        srv.call(client.start())
        try:
            assert wait_for(lambda: client.status().state == "registered", 10), client.status()
            assert directory.registrations[0].device_id == LOCAL_ID
            assert directory.registrations[0].peer.transport == transport
            assert wait_for(lambda: len(directory.keepalives) >= 2, 20)
            answer = srv.call(srv.server.query_catalog(LOCAL_ID), timeout=20)
            assert answer.complete and answer.sum_num == 8 and answer.items == 8
            assert len(answer.documents) == math.ceil(8 / 3)
            docs = [parse_manscdp(d) for d in answer.documents]
            assert {d.sn for d in docs} == {answer.sn}
            got = re.findall(rb"<DeviceID>(371311000013200\d{5})</DeviceID>", b"".join(answer.documents))
            assert sorted(got) == sorted(re.findall(rb"371311000013200\d{5}", "".join(items).encode()))
            assert wait_for(lambda: client.status().catalog_messages == 3, 20)
            st = client.status()
            assert st.catalog_queries == 1 and st.last_keepalive_at is not None and st.failures == 0
        finally:
            srv.call(client.stop())
        assert wait_for(lambda: len(directory.unregistrations) == 1, 5)  # stop() unregisters (Expires: 0)


def test_refused_registration_is_retried_with_back_off() -> None:
    directory = MemoryDirectory(passwords={LOCAL_ID: "another-password"})
    with ServerThread(directory, max_failed_auth=1000) as srv:
        client = GbUpstream(config(srv.port("udp"), retry_min_s=0.3, retry_max_s=5.0), lambda: [])
        srv.call(client.start())
        try:
            time.sleep(2.5)
            st = client.status()
        finally:
            srv.call(client.stop())
    assert st.state == "retrying" and "403" in (st.last_error or "")
    attempts = srv.server.stats["register_403"]
    # back-off 0.3, 0.6, 1.2 s (x0.8..1.2): 3 or 4 attempts in 2.5 s; a tight loop would make hundreds
    assert 2 <= attempts <= 5, attempts
    assert st.failures == attempts and st.next_attempt_at is not None
    assert not directory.registrations


def test_platform_down_then_up_registers() -> None:
    """Nothing listens yet (UDP: ICMP port unreachable, or no answer): retried until the platform comes up."""
    port = free_port()

    async def scenario() -> tuple[int, str]:
        client = GbUpstream(config(port, "tcp", retry_min_s=0.2, retry_max_s=0.5), lambda: [])
        await client.start()
        await asyncio.sleep(1.0)
        failures = client.status().failures
        await client.stop()
        return failures, client.status().last_error or ""

    failures, error = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert 1 <= failures <= 6 and "connect" in error


# ---------------------------------------------------------------------------------------------- SIPp as the platform


def _sipp_platform(tmp_path: Path, transport: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    trace = tmp_path / f"platform-{transport}.log"
    cmd = [sipp_binary(), "-sf", str(SIPP_DIR / "uas_upstream.xml"), "-i", "127.0.0.1", "-p", str(port),
           "-t", "u1" if transport == "udp" else "t1", "-nd", "-nostdin", "-trace_msg", "-message_file",
           str(trace), "-timeout", "30s"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    time.sleep(0.3)
    return proc, port, trace


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)  # SIPp's soft quit: finishes, writes its logs
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_platform_gets_registration_keepalives_and_the_catalog(tmp_path: Path, transport: str) -> None:
    items = [item(i) for i in range(7)]
    proc, port, trace = _sipp_platform(tmp_path, transport)
    loop = asyncio.new_event_loop()
    client = GbUpstream(config(port, transport, batch=3), lambda: items)
    try:
        loop.run_until_complete(client.start())

        async def until_answered() -> None:
            for _ in range(200):
                if client.status().catalog_messages >= 3:
                    return
                await asyncio.sleep(0.05)

        loop.run_until_complete(asyncio.wait_for(until_answered(), 15))
        st = client.status()
        assert st.state == "registered" and st.catalog_queries == 1 and st.catalog_messages == 3, st
        assert st.last_keepalive_at is not None
    finally:
        loop.run_until_complete(client.stop(unregister=False))
        loop.close()
        _stop(proc)
    log = trace.read_bytes()
    assert log.count(b"Authorization: Digest") >= 1
    assert b"<CmdType>Keepalive</CmdType>" in log
    responses = re.findall(rb"<Response>.*?</Response>", log, re.S)
    catalog = [parse_manscdp(r) for r in responses if b"<CmdType>Catalog</CmdType>" in r]
    assert len(catalog) == 3  # 7 items, 3 a message
    assert {d.sn for d in catalog} == {4242} and {d.sum_num for d in catalog} == {7}
    got = sorted(set(re.findall(rb"<DeviceID>(371311000013200\d{5})</DeviceID>", b"".join(responses))))
    assert got == sorted(re.findall(rb"371311000013200\d{5}", "".join(items).encode()))
    assert "路口3号".encode("gb2312") in log


def test_re_registers_before_expiry_and_when_the_platform_forgets_us() -> None:
    directory = MemoryDirectory(passwords={LOCAL_ID: UP_PASSWORD})
    with ServerThread(directory) as srv:
        client = GbUpstream(config(srv.port("udp"), expires=2, keepalive_interval_s=0.3), lambda: [])
        srv.call(client.start())
        try:
            # granted 2 s: registered again at 2 - 0.4 s, before it runs out
            assert wait_for(lambda: len(directory.registrations) >= 3, 6), len(directory.registrations)
            assert srv.server.stats["expired"] == 0
        finally:
            srv.call(client.stop(unregister=False))
    directory = MemoryDirectory(passwords={LOCAL_ID: UP_PASSWORD})
    with ServerThread(directory) as srv:
        client = GbUpstream(config(srv.port("udp"), keepalive_interval_s=0.3), lambda: [])
        srv.call(client.start())
        try:
            assert wait_for(lambda: len(directory.keepalives) >= 1, 20)

            async def forget() -> None:  # the platform restarts: it answers our keepalives 403
                srv.server._regs.clear()

            srv.call(forget())
            assert wait_for(lambda: len(directory.registrations) >= 2, 5)  # at once, not after the back-off
            assert client.stats["keepalive_refused"] >= 1 and client.status().failures == 0
        finally:
            srv.call(client.stop(unregister=False))


def test_sipp_platform_refuses_a_wrong_password(tmp_path: Path) -> None:
    proc, port, trace = _sipp_platform(tmp_path, "udp")
    loop = asyncio.new_event_loop()
    client = GbUpstream(config(port, "udp", password="not-the-password", retry_min_s=5.0), lambda: [])
    try:
        loop.run_until_complete(client.start())

        async def until_refused() -> None:
            for _ in range(100):
                if client.status().failures:
                    return
                await asyncio.sleep(0.05)

        loop.run_until_complete(asyncio.wait_for(until_refused(), 10))
        st = client.status()
        assert st.state == "retrying" and "403" in (st.last_error or "") and st.failures == 1
    finally:
        loop.run_until_complete(client.stop(unregister=False))
        loop.close()
        _stop(proc)
    assert b"SIP/2.0 403 Forbidden" in trace.read_bytes()


def test_device_info_status_queries_and_invite() -> None:
    """A raw platform over UDP: 200 to our REGISTER, then DeviceInfo and DeviceStatus queries (200, then a Response
    MESSAGE each) and an INVITE (501: no media)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3.0)
    port = sock.getsockname()[1]

    def recv() -> tuple[SipMessage, tuple[str, int]]:
        data, addr = sock.recvfrom(65535)
        return parse_message(data), addr

    def answer(msg: SipMessage, addr: tuple[str, int], status: int = 200, extra: str = "") -> None:
        head = [f"SIP/2.0 {status} OK", *(f"Via: {v}" for v in msg.get_all("Via")), f"From: {msg.get('From')}",
                f"To: {msg.get('To')};tag=up1", f"Call-ID: {msg.get('Call-ID')}", f"CSeq: {msg.get('CSeq')}"]
        sock.sendto(("\r\n".join(head) + extra + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)

    def request(method: str, addr: tuple[str, int], body: str, n: int) -> None:
        lines = [f"{method} sip:{LOCAL_ID}@{LOCAL_DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-q{n}",
                 f"From: <sip:{UP_ID}@{UP_DOMAIN}>;tag=q{n}", f"To: <sip:{LOCAL_ID}@{LOCAL_DOMAIN}>",
                 f"Call-ID: q{n}@up", f"CSeq: {n} {method}", "Content-Type: Application/MANSCDP+xml",
                 f"Content-Length: {len(body.encode())}"]
        sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), addr)

    loop = asyncio.new_event_loop()
    client = GbUpstream(config(port, "udp", keepalive_interval_s=60.0, t1=1.0), lambda: [item(1), item(2)])
    try:
        loop.run_until_complete(client.start())

        def pump(seconds: float = 0.3) -> None:
            loop.run_until_complete(asyncio.sleep(seconds))

        pump(0.2)
        reg, addr = recv()
        assert reg.method == "REGISTER"
        answer(reg, addr, extra="\r\nExpires: 3600")
        pump()
        assert client.status().state == "registered"
        responses: dict[str, bytes] = {}
        for n, cmd in enumerate(("DeviceInfo", "DeviceStatus"), start=1):
            request("MESSAGE", addr, f'<?xml version="1.0"?><Query><CmdType>{cmd}</CmdType><SN>{n}</SN>'
                    f"<DeviceID>{LOCAL_ID}</DeviceID></Query>", n)
            pump()
            ok, _ = recv()
            assert ok.status == 200 and ok.cseq() == (n, "MESSAGE")
            resp, _ = recv()
            assert resp.method == "MESSAGE"
            answer(resp, addr)
            responses[cmd] = resp.body
        request("INVITE", addr, "", 9)
        pump()
        refused, _ = recv()
        assert refused.status == 501
    finally:
        loop.run_until_complete(client.stop(unregister=False))
        loop.close()
        sock.close()
    info = responses["DeviceInfo"]
    assert b"<CmdType>DeviceInfo</CmdType>" in info and b"<SN>1</SN>" in info and b"<Channel>2</Channel>" in info
    assert b"<Result>OK</Result>" in info
    status = responses["DeviceStatus"]
    assert b"<Online>ONLINE</Online>" in status and b"<SN>2</SN>" in status
