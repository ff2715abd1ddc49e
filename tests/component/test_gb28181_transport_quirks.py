"""GbServer and devices that move: a device registered over UDP that keeps alive over TCP (or the reverse), or from
another source port of the same host (NAT rebinding, a reconnect), is heard, and the Catalog query goes where it
spoke from last; a keepalive from an ID that never registered, or from another host, is still refused (403).
Raw sockets on 127.0.0.1 (tests/gb28181.py)."""

from __future__ import annotations

import re
import threading

import pytest

from probes.gb28181.message import SipMessage
from tests.gb28181 import RawDevice, ServerThread, wait_for

DEVICE = "37131100001320000001"


@pytest.fixture
def st() -> ServerThread:  # type: ignore[misc]
    with ServerThread() as running:
        yield running


def _ok(device: RawDevice, request: SipMessage) -> None:
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in request.vias()), f"From: {request.get('From')}",
             f"To: {request.get('To')};tag=dev1", f"Call-ID: {request.get('Call-ID')}",
             f"CSeq: {request.get('CSeq')}", "Content-Length: 0"]
    device.send(("\r\n".join(lines) + "\r\n\r\n").encode())


@pytest.mark.parametrize(("registers", "keeps_alive"), [("udp", "tcp"), ("tcp", "udp"), ("udp", "udp"),
                                                        ("tcp", "tcp")])
def test_keepalive_over_another_transport_or_port_is_heard(st: ServerThread, registers: str,
                                                           keeps_alive: str) -> None:
    first = RawDevice(registers, st.port(registers), DEVICE)
    second = RawDevice(keeps_alive, st.port(keeps_alive), DEVICE)  # another socket: another source port
    try:
        assert first.register().status == 200
        assert second.port != first.port
        second.send(second.keepalive(7))
        assert second.recv().status == 200
        d = st.directory
        assert wait_for(lambda: d.keepalives)
        [ka] = d.keepalives
        assert (ka.device_id, ka.sn, ka.peer.transport, ka.peer.port) == (DEVICE, 7, keeps_alive, second.port)
        peer = st.server.registered_peer(DEVICE)
        assert peer is not None and (peer.transport, peer.port) == (keeps_alive, second.port)
        # the platform's next request goes where the device spoke from last
        result: dict[str, object] = {}
        asker = threading.Thread(target=lambda: result.update(sub=st.call(st.server.subscribe_catalog(DEVICE))))
        asker.start()
        request = second.recv()
        assert request.method == "SUBSCRIBE" and re.search(rf"@127\.0\.0\.1:{second.port}\b", request.uri or "")
        _ok(second, request)
        asker.join(10)
        assert result == {"sub": True}
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_keepalives_of_unregistered_ids_and_other_hosts_are_still_refused(st: ServerThread, transport: str) -> None:
    stranger = RawDevice(transport, st.port(transport), "37131100001320000009")
    registered = RawDevice("udp", st.port("udp"), DEVICE)
    elsewhere = RawDevice(transport, st.port(transport), DEVICE, bind="127.0.0.2")  # same ID, another host
    try:
        stranger.send(stranger.keepalive())
        assert stranger.recv().status == 403
        assert registered.register().status == 200
        elsewhere.send(elsewhere.keepalive())
        assert elsewhere.recv().status == 403
        stranger.send(stranger.keepalive(2))
        assert stranger.recv().status == 403
        assert st.directory.keepalives == []
        peer = st.server.registered_peer(DEVICE)
        assert peer is not None and (peer.transport, peer.port) == ("udp", registered.port)
        assert st.server.stats["message_unregistered"] == 3
    finally:
        stranger.close()
        registered.close()
        elsewhere.close()
