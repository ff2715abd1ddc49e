from datetime import UTC, datetime, timedelta

from probes.onvif.addresses import strip_credentials as strip_userinfo
from vms.catalog.domain import DEFAULT_PRIORITY, SourceKind, identity_keys, normalize_mac
from vms.inventory.merge import SourcedRecord, merge_observations

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rank(source: str, kind: SourceKind) -> int:
    return DEFAULT_PRIORITY.index(kind.value)


def rec(source, kind, at=T0, **fields):
    return SourcedRecord(source, kind, fields, at)


def test_strongest_source_wins_and_disagreement_is_kept():
    ledger = rec("ledger:police", SourceKind.LEDGER, name="罗庄路口东", longitude=118.28, model="DS-2CD")
    catalog = rec("catalog:platform", SourceKind.CATALOG, name="罗庄路口东侧", manufacturer="Hikvision")
    merged = merge_observations([ledger, catalog], rank)
    assert merged.fields["name"] == "罗庄路口东侧"  # catalog outranks ledger by default
    assert merged.provenance["name"].source == "catalog:platform"
    assert merged.fields["model"] == "DS-2CD"
    assert merged.provenance["model"].source == "ledger:police"
    assert merged.conflicts == {"name": {"catalog:platform": "罗庄路口东侧", "ledger:police": "罗庄路口东"}}


def test_merge_does_not_depend_on_input_order():
    a = rec("ledger:a", SourceKind.LEDGER, T0, name="A")
    b = rec("ledger:b", SourceKind.LEDGER, T0 + timedelta(hours=1), name="B")
    assert merge_observations([a, b], rank).fields == merge_observations([b, a], rank).fields
    # same priority: the most recently updated source wins
    assert merge_observations([a, b], rank).fields["name"] == "B"


def test_equal_values_are_not_conflicts():
    a = rec("x", SourceKind.LEDGER, longitude=118.1234567, mac="00-1A-2B-3C-4D-5E", name="Gate ")
    b = rec("y", SourceKind.CATALOG, longitude=118.1234568, mac="001a2b3c4d5e", name="gate")
    assert merge_observations([a, b], rank).conflicts == {}


def test_identity_keys_and_mac_normalisation():
    keys = identity_keys(
        {
            "device_id": "37131100001326000001",
            "mac": "00:1A:2B:3C:4D:5E",
            "serial_number": "SN1",
            "manufacturer": "HIK",
            "ip_address": "10.0.0.5",
            "port": 8000,
        }
    )
    assert keys == {
        "device_id": "37131100001326000001",
        "mac": "00:1a:2b:3c:4d:5e",
        "serial": "hik|SN1",
        "host_port": "10.0.0.5:8000",
    }
    assert normalize_mac("00:00:00:00:00:00") is None
    assert normalize_mac("not a mac") is None


def test_credentials_are_stripped_from_urls():
    assert strip_userinfo("rtsp://admin:p%40ss@10.0.0.5:554/Streaming/101") == "rtsp://10.0.0.5:554/Streaming/101"
    assert strip_userinfo("http://[fe80::1]:80/snap.jpg") == "http://[fe80::1]:80/snap.jpg"


def test_covering_cidr():
    from vms.discovery.demo import covering_cidr

    assert covering_cidr(["127.1.0.1", "127.1.0.50"]) == "127.1.0.0/26"
    assert covering_cidr(["127.151.3.250", "127.151.5.10"]) == "127.151.0.0/21"
    assert covering_cidr(["10.0.0.7"]) == "10.0.0.7/32"
