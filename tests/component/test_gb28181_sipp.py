"""GB/T 28181 devices played by SIPp (tests/data/sipp/) against a real GbServer on 127.0.0.1, over UDP and TCP:
register with digest, wrong password, keepalive, a Catalog answer in two GB2312 MESSAGEs, unregister, and 1,000
devices registering and keeping alive without loss. sipp missing: skipped locally, failed on CI."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from probes.gb28181.manscdp import parse_manscdp
from tests.gb28181 import ServerThread, SippRun, device_csv, run_sipp, sipp_binary, wait_for

TRANSPORTS = ["udp", "tcp"]
DEVICE = "37131100001180000001"


@pytest.fixture(autouse=True)
def _sipp() -> None:
    sipp_binary()  # skip (or fail on CI) before starting anything


def _check(run: SippRun) -> None:
    assert run.returncode == 0, run.output


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_with_digest_then_keepalive(transport: str, tmp_path: Path) -> None:
    with ServerThread() as st:
        run = run_sipp(st.port(transport), "register_keepalive.xml", device_csv(tmp_path / "d.csv", [DEVICE]),
                       transport, cwd=tmp_path)
        _check(run)
        d = st.directory
        assert wait_for(lambda: d.keepalives)
        assert [r.device_id for r in d.registrations] == [DEVICE]
        reg = d.registrations[0]
        assert (reg.domain, reg.expires, reg.peer.transport, reg.peer.host) == ("3402000000", 3600, transport,
                                                                                 "127.0.0.1")
        assert reg.user_agent == "SIPp GB device" and reg.contact and DEVICE in reg.contact
        assert st.server.registered_peer(DEVICE) == reg.peer
        ka = d.keepalives[0]
        assert (ka.device_id, ka.status, ka.peer) == (DEVICE, "OK", reg.peer)
        stats = st.server.stats
        assert (stats["register_401"], stats["register_ok"], stats["keepalive"]) == (1, 1, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_is_refused(transport: str, tmp_path: Path) -> None:
    with ServerThread() as st:
        run = run_sipp(st.port(transport), "wrong_password.xml",
                       device_csv(tmp_path / "d.csv", [DEVICE], password="not-the-password"), transport, cwd=tmp_path)
        _check(run)  # the scenario expects the 403
        assert st.directory.registrations == [] and st.server.registered_peer(DEVICE) is None
        assert st.server.stats["register_403"] == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unregister_with_expires_zero(transport: str, tmp_path: Path) -> None:
    with ServerThread() as st:
        _check(run_sipp(st.port(transport), "unregister.xml", device_csv(tmp_path / "d.csv", [DEVICE]), transport,
                        cwd=tmp_path))
        d = st.directory
        assert wait_for(lambda: d.unregistrations)
        assert [type(e).__name__ for e in d.events] == ["Registration", "Unregistration"]
        assert d.unregistrations[0].device_id == DEVICE
        assert st.server.registered_peer(DEVICE) is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_catalog_over_two_messages_in_gb2312(transport: str, tmp_path: Path) -> None:
    """The query after registration and one on demand: each answer is two MESSAGEs (2 + 1 items, SumNum 3) grouped
    by SN into one complete CatalogAnswer holding both documents as sent (GB2312 bytes)."""
    with ServerThread(query_catalog_on_register=True) as st:
        d = st.directory
        csv = device_csv(tmp_path / "d.csv", [DEVICE])
        result: dict[str, object] = {}

        def on_demand() -> None:
            if wait_for(lambda: d.answers, timeout=10):  # the query after registration came back: ask again
                result["answer"] = st.call(st.server.query_catalog(DEVICE), timeout=10)

        asker = threading.Thread(target=on_demand)
        asker.start()
        run = run_sipp(st.port(transport), "register_wait.xml", csv, transport, ooc="catalog_answer.xml",
                       cwd=tmp_path)
        asker.join(15)
        _check(run)
        assert "answer" in result, dict(st.server.stats)
        assert len(d.answers) == 2 and d.answers[1] == result["answer"]
        for answer in d.answers:
            assert (answer.device_id, answer.sum_num, answer.items, answer.complete) == (DEVICE, 3, 3, True)
            assert len(answer.documents) == 2
            assert "罗庄区政府门口".encode("gb2312") in answer.documents[0]
            assert "罗庄区公安分局东门".encode("gb2312") in answer.documents[1]
            assert [parse_manscdp(doc).sn for doc in answer.documents] == [answer.sn, answer.sn]
        assert d.answers[0].sn != d.answers[1].sn


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_thousand_devices_register_and_keep_alive(transport: str, tmp_path: Path) -> None:
    ids = [f"3713110000132{i:07d}" for i in range(1, 1001)]
    with ServerThread() as st:
        run = run_sipp(st.port(transport), "register_keepalive.xml", device_csv(tmp_path / "d.csv", ids), transport,
                       calls=1000, rate=500, limit=300, timeout_s=30, cwd=tmp_path)
        _check(run)
        d = st.directory
        assert wait_for(lambda: len(d.keepalives) >= 1000, timeout=10)
        assert sorted(r.device_id for r in d.registrations) == ids  # each once: no loss, no duplicate
        assert sorted(k.device_id for k in d.keepalives) == ids
        assert all(st.server.registered_peer(i) is not None for i in ids)
        stats = st.server.stats
        assert (stats["register_ok"], stats["keepalive"], stats["register_403"]) == (1000, 1000, 0)
