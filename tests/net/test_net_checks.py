"""Pure checks of mcastcam.net: group validation, HOST:PORT parsing, interface lookup."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess

import netifaces
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastcam import net
from mcastcam.errors import ConfigError

# ---------------------------------------------------------------- check_group


@pytest.mark.parametrize("addr", ["192.168.1.10", "127.0.0.1", "240.0.0.1", "255.255.255.255"])
def test_non_multicast_group_is_refused(addr: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"bad group {addr}: not a multicast address")):
        net.check_group(addr)


@pytest.mark.parametrize("addr", ["224.0.0.1", "224.0.0.22", "224.0.0.251", "224.0.0.255"])
def test_link_local_control_block_is_refused(addr: str) -> None:
    message = re.escape("224.0.0.0/24 is the link-local control block")
    with pytest.raises(ConfigError, match=message):
        net.check_group(addr)


@pytest.mark.parametrize("addr", ["", "239.255.1", "239.255.1.300", "cam.local", "::1"])
def test_group_that_is_not_ipv4_is_refused(addr: str) -> None:
    with pytest.raises(ConfigError, match="not an IPv4 address"):
        net.check_group(addr)


@pytest.mark.parametrize(
    "addr", ["239.0.0.1", "239.0.1.200", "239.128.0.7", "225.128.1.1", "224.0.1.1"]
)
def test_mac_aliased_group_warns(addr: str) -> None:
    warnings = net.check_group(addr)
    assert len(warnings) == 1
    assert addr in warnings[0]
    assert "239.255.x.y" in warnings[0]
    assert "IGMP snooping" in warnings[0]


@pytest.mark.parametrize("addr", ["239.255.10.1", "239.1.2.3", "238.2.0.1", "232.1.1.1"])
def test_plain_group_has_no_warning(addr: str) -> None:
    assert net.check_group(addr) == []


def _mac(ip: ipaddress.IPv4Address) -> bytes:
    """RFC 1112 §6.4: 01:00:5e followed by the low 23 bits of the group."""
    return bytes([0x01, 0x00, 0x5E]) + (int(ip) & 0x7FFFFF).to_bytes(3, "big")


_CONTROL_MACS = {
    _mac(a) for net_ in ("224.0.0.0/24", "224.0.1.0/24") for a in ipaddress.IPv4Network(net_)
}


@given(
    st.integers(
        min_value=int(ipaddress.IPv4Address("224.0.1.0")),
        max_value=int(ipaddress.IPv4Address("239.255.255.255")),
    )
)
def test_warning_iff_ethernet_mac_collides_with_control_blocks(value: int) -> None:
    ip = ipaddress.IPv4Address(value)
    warned = bool(net.check_group(str(ip)))
    assert warned == (_mac(ip) in _CONTROL_MACS)


# ---------------------------------------------------------------- parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("239.255.10.1:5004", ("239.255.10.1", 5004)),
        ("239.255.10.1", ("239.255.10.1", 7000)),
        (" 10.0.0.2:1 ", ("10.0.0.2", 1)),
        (":6000", ("", 6000)),
        ("camera-1.lan:65535", ("camera-1.lan", 65535)),
        ("localhost", ("localhost", 7000)),
    ],
)
def test_parse_host_port_accepts(text: str, expected: tuple[str, int]) -> None:
    assert net.parse_host_port(text, 7000) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("   ", "empty address"),
        ("239.255.10.1:", "bad port ''"),
        ("239.255.10.1:http", "bad port 'http'"),
        ("239.255.10.1:0", "bad port 0"),
        ("239.255.10.1:65536", "bad port 65536"),
        ("239.255.10.1:-5", "bad port '-5'"),
        ("[::1]:5004", "only IPv4"),
        ("fe80::1", "only IPv4"),
        ("300.1.2.3:5004", "bad IPv4 address '300.1.2.3'"),
        ("1.2.3:5004", "bad IPv4 address '1.2.3'"),
        ("bad_host:5004", "bad host name 'bad_host'"),
        ("-lead.lan", "bad host name"),
    ],
)
def test_parse_host_port_refuses(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        net.parse_host_port(text, 7000)


def test_parse_host_port_checks_default_port_too() -> None:
    with pytest.raises(ConfigError, match="bad port 0"):
        net.parse_host_port("239.255.10.1", 0)


# ---------------------------------------------------------------- resolve_interface


def test_unknown_interface_lists_the_ones_we_have() -> None:
    with pytest.raises(ConfigError) as info:
        net.resolve_interface("nosuch0")
    message = str(info.value)
    assert message.startswith("no such interface nosuch0 (have: ")
    for name in netifaces.interfaces():
        assert name in message


def test_interface_without_ipv4_is_refused() -> None:
    bare = [
        n for n in netifaces.interfaces() if not netifaces.ifaddresses(n).get(netifaces.AF_INET)
    ]
    if not bare:
        pytest.skip("every interface here has an IPv4 address (the netns test covers this)")
    with pytest.raises(ConfigError, match=re.escape(f"interface {bare[0]} has no IPv4 address")):
        net.resolve_interface(bare[0])


def _ip_json(*args: str) -> list[dict[str, object]]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 `ip` is not installed")
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True)
    return list(json.loads(out.stdout or "[]"))


def test_loopback_interface_matches_iproute2() -> None:
    lo = net.resolve_interface("lo")
    (link,) = _ip_json("link", "show", "dev", "lo")
    assert lo.name == "lo"
    assert lo.index == link["ifindex"]
    assert lo.mtu == link["mtu"]
    assert lo.address == "127.0.0.1"
    assert lo.netmask == "255.0.0.0"
    assert lo.broadcast is None  # loopback has no broadcast address


def test_default_interface_is_the_default_route_device() -> None:
    routes = _ip_json("-4", "route", "show", "default")
    expected = str(routes[0]["dev"]) if routes else "lo"
    iface = net.resolve_interface(None)
    assert iface.name == expected
    (link,) = _ip_json("link", "show", "dev", expected)
    assert iface.index == link["ifindex"]
    assert iface.mtu == link["mtu"]
    (addr_info,) = _ip_json("-4", "addr", "show", "dev", expected)
    first = addr_info["addr_info"][0]  # type: ignore[index]
    assert iface.address == first["local"]
    if "broadcast" in first:
        assert iface.broadcast == first["broadcast"]
