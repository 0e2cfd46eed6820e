"""Real sockets on loopback multicast (group 239.255.x.y joined on 127.0.0.1, TTL 0).

Nothing here leaves the host: every sender is pinned to ``lo`` with TTL 0, unicast goes to
127.0.0.1 only.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from mcastcam import net
from mcastcam.errors import ConfigError, NetworkSetupError

pytestmark = pytest.mark.multicast

# Distinct per test process, so parallel runs do not hear each other.
_BASE = 239 << 24 | 255 << 16 | ((os.getpid() % 200) + 20) << 8


def _group(n: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", _BASE + n))


def _recv_all(socks: list[socket.socket], timeout: float = 1.0) -> dict[int, list[bytes]]:
    """Drain every socket until ``timeout`` seconds pass with nothing new; bounded at 1000."""
    got: dict[int, list[bytes]] = {s.fileno(): [] for s in socks}
    for _ in range(1000):
        ready, _w, _x = select.select(socks, [], [], timeout)
        if not ready:
            break
        for s in ready:
            got[s.fileno()].append(s.recv(70000))
    return got


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as es:
        yield es


@pytest.fixture(scope="module")
def lo() -> net.Interface:
    return net.resolve_interface("lo")


@pytest.fixture(scope="module", autouse=True)
def loopback_multicast_works(lo: net.Interface) -> None:
    """Capability probe: skip the module where a datagram to a group joined on lo is lost."""
    group = _group(250)
    try:
        rx = net.open_multicast_receiver(group, 0, lo)
    except NetworkSetupError as err:
        pytest.skip(f"cannot join {group} on lo: {err}")
    with rx, net.open_multicast_sender(lo, 0, True) as tx:
        tx.sendto(b"probe", (group, rx.getsockname()[1]))
        if not select.select([rx], [], [], 2.0)[0]:
            pytest.skip(
                "loopback multicast does not work here: a datagram sent to a group "
                "joined on 127.0.0.1 (TTL 0, loop on) did not arrive within 2 s"
            )
        rx.recv(100)


def test_datagram_reaches_member_and_only_that_group(lo: net.Interface, stack: ExitStack) -> None:
    rx = stack.enter_context(net.open_multicast_receiver(_group(1), 0, lo))
    port = rx.getsockname()[1]
    other = stack.enter_context(net.open_multicast_receiver(_group(2), port, lo))
    tx = stack.enter_context(net.open_multicast_sender(lo, ttl=0, loop=True))
    assert tx.getsockname()[0] == "127.0.0.1"
    assert tx.getblocking() is False and rx.getblocking() is False
    assert tx.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 0

    header, payload = b"HDR1", memoryview(b"x" * 1000)[100:600]
    assert net.send_fragments(tx, (_group(1), port), [(header, payload)]) == 1

    got = _recv_all([rx, other], timeout=0.5)
    assert got[rx.fileno()] == [b"HDR1" + b"x" * 500]
    assert got[other.fileno()] == []


def test_source_address_is_on_the_interface(lo: net.Interface, stack: ExitStack) -> None:
    rx = stack.enter_context(net.open_multicast_receiver(_group(3), 0, lo))
    tx = stack.enter_context(net.open_multicast_sender(lo, ttl=0, loop=True))
    tx.sendto(b"a", (_group(3), rx.getsockname()[1]))
    assert select.select([rx], [], [], 2.0)[0]
    _data, source = rx.recvfrom(10)
    assert source == tx.getsockname()


def test_two_receivers_on_one_port_both_get_each_datagram(
    lo: net.Interface, stack: ExitStack
) -> None:
    a = stack.enter_context(net.open_multicast_receiver(_group(4), 0, lo))
    port = a.getsockname()[1]
    b = stack.enter_context(net.open_multicast_receiver(_group(4), port, lo))
    tx = stack.enter_context(net.open_multicast_sender(lo, ttl=0, loop=True))
    sent = [(b"h", str(i).encode()) for i in range(5)]
    assert net.send_fragments(tx, (_group(4), port), sent) == 5
    got = _recv_all([a, b], timeout=0.5)
    expected = [h + p for h, p in sent]
    assert got[a.fileno()] == expected
    assert got[b.fileno()] == expected


def test_unicast_pair_on_loopback(stack: ExitStack) -> None:
    rx = stack.enter_context(net.open_unicast_receiver("127.0.0.1", 0))
    tx = stack.enter_context(net.open_unicast_sender(sndbuf=65536))
    dest = rx.getsockname()
    assert net.send_fragments(tx, dest, [(b"H", b"one"), (b"H", bytearray(b"two"))]) == 2
    assert _recv_all([rx], timeout=0.3)[rx.fileno()] == [b"Hone", b"Htwo"]


# ---------------------------------------------------------------- buffers


def _sysctl(name: str) -> int:
    return int(Path("/proc/sys", *name.split(".")).read_text())


@pytest.mark.parametrize(
    ("which", "sysctl"), [("rcv", "net.core.rmem_max"), ("snd", "net.core.wmem_max")]
)
def test_buffer_clamp_is_reported(which: str, sysctl: str, stack: ExitStack) -> None:
    sock = stack.enter_context(net.open_unicast_sender())
    limit = _sysctl(sysctl)
    asked = limit + 1_000_000
    warning = net.set_buffer(sock, which, asked)  # type: ignore[arg-type]
    assert warning is not None
    assert sysctl in warning
    assert f"sysctl -w {sysctl}={asked}" in warning
    assert f"asked for {asked} bytes, the kernel granted {limit}" in warning


def test_buffer_within_limit_has_no_warning(stack: ExitStack) -> None:
    sock = stack.enter_context(net.open_unicast_sender())
    size = min(_sysctl("net.core.rmem_max"), 256 * 1024)
    assert net.set_buffer(sock, "rcv", size) is None
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * size


def test_clamped_receiver_buffer_is_logged(
    lo: net.Interface, stack: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcastcam.net")
    huge = _sysctl("net.core.rmem_max") * 2
    stack.enter_context(net.open_multicast_receiver(_group(6), 0, lo, rcvbuf=huge))
    assert any("net.core.rmem_max" in r.getMessage() for r in caplog.records)


def test_bad_buffer_size_is_a_config_error(stack: ExitStack) -> None:
    sock = stack.enter_context(net.open_unicast_sender())
    with pytest.raises(ConfigError, match="bad buffer size 0"):
        net.set_buffer(sock, "snd", 0)


# ---------------------------------------------------------------- refusals and errno hints


def test_broadcast_on_loopback_is_refused(lo: net.Interface) -> None:
    with pytest.raises(ConfigError, match="interface lo has no broadcast address"):
        net.open_broadcast_sender(lo)
    with pytest.raises(ConfigError, match="interface lo has no broadcast address"):
        net.open_broadcast_receiver(0, lo)


def test_bad_ttl_is_refused(lo: net.Interface) -> None:
    with pytest.raises(ConfigError, match="bad TTL 256"):
        net.open_multicast_sender(lo, ttl=256, loop=True)


def test_receiver_refuses_non_multicast_and_control_groups(lo: net.Interface) -> None:
    with pytest.raises(ConfigError, match="not a multicast address"):
        net.open_multicast_receiver("127.0.0.1", 0, lo)
    with pytest.raises(ConfigError, match="link-local control block"):
        net.open_multicast_receiver("224.0.0.251", 0, lo)


def test_aliased_group_is_logged_but_works(
    lo: net.Interface, stack: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcastcam.net")
    stack.enter_context(net.open_multicast_receiver("239.128.0.77", 0, lo))
    assert any("239.255.x.y" in r.getMessage() for r in caplog.records)


def test_join_on_missing_interface_index_says_no_such_interface(lo: net.Interface) -> None:
    ghost = net.Interface("ghost0", 0x7FFFFFF0, "127.0.0.1", "255.0.0.0", None, 1500)
    with pytest.raises(NetworkSetupError) as info:
        net.open_multicast_receiver(_group(7), 0, ghost)
    assert info.value.errno == errno.ENODEV
    assert f"join group {_group(7)} on ghost0" in str(info.value)
    assert "no such interface" in str(info.value)


def test_sender_on_foreign_address_says_address_not_local() -> None:
    # 198.18.255.254 (RFC 2544 benchmarking range) is on no interface of this host.
    foreign = net.Interface("lo", 1, "198.18.255.254", "255.255.255.0", None, 65536)
    with pytest.raises(NetworkSetupError) as info:
        net.open_multicast_sender(foreign, ttl=0, loop=True)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert "198.18.255.254" in str(info.value)
    assert "not local" in str(info.value)


def test_port_in_use_is_explained(stack: ExitStack) -> None:
    first = stack.enter_context(net.open_unicast_receiver("127.0.0.1", 0))
    with pytest.raises(NetworkSetupError) as info:
        net.open_unicast_receiver("127.0.0.1", first.getsockname()[1])
    assert info.value.errno == errno.EADDRINUSE
    assert "ss -ulpn" in str(info.value)


def test_too_many_memberships_names_the_sysctl(lo: net.Interface, stack: ExitStack) -> None:
    """Join groups on one socket until the kernel says ENOBUFS; the hint names the sysctl."""
    limit = _sysctl("net.ipv4.igmp_max_memberships")
    if limit > 200:
        pytest.skip(f"net.ipv4.igmp_max_memberships is {limit}; too many joins for a test")
    sock = stack.enter_context(net.open_multicast_receiver(_group(8), 0, lo))
    caught: OSError | None = None
    for n in range(9, 9 + limit + 1):
        mreqn = struct.pack(
            "4s4si", socket.inet_aton(_group(n)), socket.inet_aton(lo.address), lo.index
        )
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        except OSError as err:
            caught = err
            break
    assert caught is not None and caught.errno == errno.ENOBUFS
    error = net.setup_error(caught, "join one group too many")
    assert error.errno == errno.ENOBUFS
    assert "net.ipv4.igmp_max_memberships" in str(error)


# ---------------------------------------------------------------- send_fragments errors


def test_send_error_drops_one_datagram_counts_it_and_logs_once(
    stack: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcastcam.net")
    rx = stack.enter_context(net.open_unicast_receiver("127.0.0.1", 0))
    tx = stack.enter_context(net.open_unicast_sender())
    stats = net.SendStats()
    too_big = b"z" * 70_000  # larger than any UDP datagram: EMSGSIZE
    datagrams = [(b"H", b"a"), (b"H", too_big), (b"H", too_big), (b"H", b"b")]
    assert net.send_fragments(tx, rx.getsockname(), datagrams, stats) == 4
    assert stats.sent == 2
    assert stats.errors == {errno.EMSGSIZE: 2}
    assert stats.blocked == 0
    assert _recv_all([rx], timeout=0.3)[rx.fileno()] == [b"Ha", b"Hb"]
    logged = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(logged) == 1  # rate-limited: once per minute per errno
