"""The address policy (probes.policy): canonical parsing of every host spelling, and the decision rules."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket

import pytest

from probes.policy import AddressPolicy, Admitted, HostName, Refusal, parse_host, parse_network

# --- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2131296259", "127.9.0.3"),  # one decimal number
        ("127.9.3", "127.9.0.3"),  # three parts: the last fills two bytes
        ("127.589827", "127.9.0.3"),  # two parts
        ("0x7f090003", "127.9.0.3"),  # hexadecimal
        ("0X7F.9.0.3", "127.9.0.3"),
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0177.011.0.03", "127.9.0.3"),
        ("localhost", "127.0.0.1"),
        ("localhost.", "127.0.0.1"),  # trailing dot: the root label
        ("LocalHost.LocalDomain", "127.0.0.1"),
        ("127.9.0.3.", "127.9.0.3"),
        ("[::ffff:127.9.0.3]", "127.9.0.3"),  # IPv4-mapped IPv6 is reached as IPv4
        ("::ffff:7f09:3", "127.9.0.3"),
        ("[0:0:0:0:0:ffff:7f09:0003]", "127.9.0.3"),
        ("[fe80::1%25eth0]", "fe80::1"),  # zone id, as written in a URL
        ("fe80::1%eth0", "fe80::1"),
        ("[::1]", "::1"),
        ("10.1.2.3", "10.1.2.3"),
    ],
)
def test_every_spelling_of_an_address_is_read_canonically(text, expected):
    assert parse_host(text) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("text", ["2131296259", "127.9.3", "127.589827", "0x7f090003", "0177.0.0.1", "0177.011.0.03"])
def test_legacy_forms_agree_with_the_system_resolver(text):
    # inet_aton is what getaddrinfo uses for numeric hosts: our reading must be the resolver's
    assert parse_host(text) == ipaddress.IPv4Address(socket.inet_aton(text))


def test_names_and_unusable_hosts():
    assert parse_host("Cam7.Example.org.") == HostName("cam7.example.org")
    assert parse_host("") is None and parse_host("[]") is None
    for bad in ("a b", "999.1.1.1", "1.2.3.4.5", "08.0.0.1", "[::1", "10.0.0.1%eth0", "ca\u00efmera.cn", "x" * 300):
        with pytest.raises(ValueError):
            parse_host(bad)


def test_networks_parse_canonically():
    assert parse_network("10.1.2.3/24") == ipaddress.ip_network("10.1.2.0/24")
    assert parse_network("0x0a000001") == ipaddress.ip_network("10.0.0.1/32")
    with pytest.raises(ValueError):
        parse_network("999.1.1.0/24")
    with pytest.raises(ValueError, match=r"999\.1\.1\.0/24"):
        AddressPolicy.build(["10.0.0.0/8", "999.1.1.0/24"])


# --- decisions -------------------------------------------------------------------------------------------------

FLEET = "127.150.0.0/22"
DEVICE = "127.150.1.5"


def _policy(*networks: str, **kwargs) -> AddressPolicy:
    return AddressPolicy.build(networks or (FLEET,), **kwargs)


@pytest.mark.parametrize(
    "host",
    [
        "2131296259",
        "127.9.3",
        "0x7f090003",
        "0177.0.0.1",
        "localhost.",
        "localhost",
        "127.9.0.3",
        "[::ffff:127.9.0.3]",
        "[::ffff:7f09:3]",
        "[::1]",
    ],
)
def test_another_loopback_address_is_refused_for_a_device_on_loopback(host):
    verdict = _policy().check(f"http://{host}:8080/onvif/media_service", DEVICE)
    assert isinstance(verdict, Refusal), verdict
    assert "loopback" in verdict.reason


def test_the_device_itself_is_always_allowed():
    assert _policy().check(f"http://{DEVICE}:80/x", DEVICE) == Admitted(DEVICE, 80, own=True)
    # any spelling of it, on any port; link-local too when the device itself answered from there
    assert _policy().check("http://[::ffff:127.150.1.5]:8899/x", DEVICE) == Admitted(DEVICE, 8899, own=True)
    assert AddressPolicy().check("http://169.254.7.7/x", "169.254.7.7") == Admitted("169.254.7.7", 80, own=True)


@pytest.mark.parametrize(
    ("host", "device"),
    [
        ("0.0.0.0", DEVICE),  # unspecified
        ("", DEVICE),  # no host at all
        ("192.168.1.64", DEVICE),  # the LAN side behind a NAT
        ("100.64.0.9", DEVICE),  # CGNAT
        ("169.254.169.254", DEVICE),  # metadata named by a device elsewhere: it means itself, never the service
        ("127.0.0.1", "10.0.0.5"),  # loopback from a device elsewhere is the device
        ("0x7f000001", "10.0.0.5"),
        ("[fe80::1%25eth0]", "2001:db8::7"),
    ],
)
def test_addresses_that_mean_the_device_are_rewritten_to_it(host, device):
    verdict = _policy().check(f"http://{host}/onvif/media_service", device)
    assert verdict == Admitted(str(ipaddress.ip_address(device)), 80, rewritten=True)
    assert _policy().rewrites(host, device)


def test_allowed_networks_are_used_as_given_and_nothing_else():
    policy = _policy(FLEET, "10.20.0.0/16")
    assert policy.check("http://127.150.2.9:8080/x", DEVICE) == Admitted("127.150.2.9", 8080)
    assert policy.check("http://10.20.3.4/x", "10.20.0.5") == Admitted("10.20.3.4", 80)  # a private neighbour
    assert policy.check("rtsp://10.20.3.4/live", "10.20.0.5") == Admitted("10.20.3.4", 554)  # RTSP reuses it
    assert not policy.rewrites("10.20.3.4", "10.20.0.5")
    for url in ("http://58.56.10.9/x", "http://8.8.8.8:80/x", "http://[2001:db8::9]/x"):
        verdict = policy.check(url, DEVICE)
        assert isinstance(verdict, Refusal) and "outside the allowed networks" in verdict.reason
    # credentials in the URL change nothing, and are never shown
    refused = policy.check("http://admin:secret@58.56.10.9/x", DEVICE)
    assert isinstance(refused, Refusal) and "secret" not in str(refused)


@pytest.mark.parametrize(
    "url",
    [
        "http://224.0.0.1/x",  # multicast
        "http://255.255.255.255/x",  # broadcast
        "http://[ff02::1]/x",
        "http://[fd00:ec2::254]/latest/meta-data",  # metadata over IPv6, even inside an allowed network
    ],
)
def test_never_targets_stay_refused_even_inside_allowed_networks(url):
    policy = AddressPolicy.build(["0.0.0.0/0", "::/0"])
    assert isinstance(policy.check(url, "10.0.0.5" if "[" not in url else "fd00::5"), Refusal)
    # a device that is itself link-local cannot mean itself by the metadata address: refused, not rewritten
    assert isinstance(policy.check("http://169.254.169.254/latest/meta-data", "169.254.1.1"), Refusal)


def test_the_services_own_endpoints_are_refused():
    policy = AddressPolicy.build(["10.0.0.0/24"], service=[("10.0.0.2", 8000)])
    assert isinstance(policy.check("http://10.0.0.2:8000/api/v1/cameras", "10.0.0.5"), Refusal)
    assert policy.check("http://10.0.0.2:80/onvif/device_service", "10.0.0.5") == Admitted("10.0.0.2", 80)
    anywhere = AddressPolicy.build([FLEET, "127.0.0.0/8"], service=[("0.0.0.0", 8000)])
    verdict = anywhere.check("http://127.0.0.1:8000/api/v1/cameras", DEVICE)
    assert isinstance(verdict, Refusal) and "own endpoint" in verdict.reason


def test_names_are_resolved_once_and_every_address_checked():
    answers = {
        "cam.example.org": ["127.150.2.9"],
        "rebind.example.org": ["127.150.2.9", "127.0.0.1"],  # one good answer, one bad: refused
        "nat.example.org": ["192.168.1.64"],  # a name is never rewritten
    }
    asked: list[str] = []

    def resolver(name: str) -> list[str]:
        asked.append(name)
        if name not in answers:
            raise socket.gaierror("no such name")
        return answers[name]

    policy = _policy(resolver=resolver)
    assert policy.check("http://cam.example.org.:8080/x", DEVICE) == Admitted("127.150.2.9", 8080)
    assert isinstance(policy.check("http://rebind.example.org/x", DEVICE), Refusal)
    assert isinstance(policy.check("http://nat.example.org/x", DEVICE), Refusal)
    assert isinstance(policy.check("http://nowhere.example.org/x", DEVICE), Refusal)
    assert asked == ["cam.example.org", "rebind.example.org", "nat.example.org", "nowhere.example.org"]
    # an async caller resolves itself and passes the answers in: the resolver is not asked again
    assert policy.lookup_name("http://cam.example.org/x") == "cam.example.org"
    assert policy.check("http://cam.example.org/x", DEVICE, resolved=["127.150.2.9"]) == Admitted("127.150.2.9", 80)
    assert len(asked) == 4


def test_unusable_targets_are_refused_not_raised():
    policy = _policy()
    for url in ("http://a b/x", "http://127.150.1.9:99999/x", "http://127.150.1.9:8o/x", "http://[::1/x"):
        assert isinstance(policy.check(url, DEVICE), Refusal), url


def test_the_policy_is_immutable_and_extendable():
    policy = _policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.allowed = ()  # type: ignore[misc]
    wider = policy.with_networks(["10.9.0.0/16"])
    assert isinstance(policy.check("http://10.9.1.1/x", DEVICE), Admitted)  # rewritten: NAT outside allowed
    assert wider.check("http://10.9.1.1/x", DEVICE) == Admitted("10.9.1.1", 80)
