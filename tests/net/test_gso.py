"""UDP GSO (send) and GRO (receive) on real loopback multicast sockets (issue #13).

Group 239.255.x.y joined on 127.0.0.1, senders pinned to ``lo`` with TTL 0. On loopback a
``UDP_SEGMENT`` batch reaches a plain socket as separate datagrams and a socket with
``UDP_GRO`` as one coalesced buffer with the segment size in a control message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import pytest

from mcastcam import net
from mcastcam.driver import Driver

pytestmark = pytest.mark.multicast

_BASE = 239 << 24 | 255 << 16 | ((os.getpid() % 200) + 30) << 8
SO_NO_CHECK = 11  # socket(7): a socket without UDP checksums cannot use GSO (EINVAL)


def _group(n: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", _BASE + n))


@pytest.fixture(scope="module")
def lo() -> net.Interface:
    """``lo``; skip where loopback multicast, UDP_SEGMENT or UDP_GRO is missing."""
    iface = net.resolve_interface("lo")
    group = _group(250)
    with (
        net.open_multicast_receiver(group, 0, iface) as rx,
        net.open_multicast_sender(iface, 0, True) as tx,
    ):
        gro, gso = net.enable_gro(rx), net.probe_gso(tx)
        if not (gro.enabled and gso.enabled):
            pytest.skip(f"GRO {gro.describe()}, GSO {gso.describe()}: Linux >= 5.0 needed")
        probe = [(b"p", b"q" * 99)] * 2
        assert net.send_datagrams(tx, (group, rx.getsockname()[1]), probe, gso=gso) == 2
        if not select.select([rx], [], [], 2.0)[0]:
            pytest.skip("loopback multicast does not work here (a GSO batch was lost)")
    return iface


Sockets = tuple[socket.socket, socket.socket, socket.socket, tuple[str, int]]


@pytest.fixture
def pair(lo: net.Interface) -> Iterator[Callable[[int], Sockets]]:
    """``pair(n)``: sockets on group n (see :func:`_pair`), closed after the test."""
    with ExitStack() as stack:
        yield lambda n: _pair(lo, stack, n)


def _pair(lo: net.Interface, stack: ExitStack, n: int) -> Sockets:
    """A sender, a plain receiver and a receiver with GRO on one group; the destination."""
    plain = stack.enter_context(net.open_multicast_receiver(_group(n), 0, lo, 4 << 20))
    port = plain.getsockname()[1]
    gro = stack.enter_context(net.open_multicast_receiver(_group(n), port, lo, 4 << 20))
    assert net.enable_gro(gro).describe() == "on"
    tx = stack.enter_context(net.open_multicast_sender(lo, ttl=0, loop=True))
    return tx, plain, gro, (_group(n), port)


def _drain_plain(sock: socket.socket, timeout: float = 0.3) -> list[bytes]:
    """Every datagram until ``timeout`` seconds of silence; bounded at 5000."""
    out: list[bytes] = []
    for _ in range(5000):
        if not select.select([sock], [], [], timeout)[0]:
            break
        out.append(sock.recv(70000))
    return out


def _drain_gro(sock: socket.socket, timeout: float = 0.3) -> tuple[list[bytes], list[int]]:
    """Datagrams cut out of coalesced buffers, and how many each buffer held."""
    out: list[bytes] = []
    per_buffer: list[int] = []
    buf = bytearray(65535)
    for _ in range(5000):
        if not select.select([sock], [], [], timeout)[0]:
            break
        size, anc, flags, _addr = sock.recvmsg_into([buf], socket.CMSG_SPACE(4))
        assert not flags & socket.MSG_TRUNC
        seg = net.gro_segment_size(anc) or size
        pieces = [bytes(buf[i : min(i + seg, size)]) for i in range(0, size, seg)]
        out.extend(pieces)
        per_buffer.append(len(pieces))
    return out, per_buffer


def _datagrams(sizes: Sequence[int], tag: int = 0) -> list[tuple[bytes, memoryview]]:
    """``(header, payload view)`` pairs; every byte tells its datagram and offset apart."""
    frame = bytes((i * 7 + tag) & 0xFF for i in range(sum(sizes)))
    view = memoryview(frame)
    out, pos = [], 0
    for k, size in enumerate(sizes):
        header = struct.pack("!HH", tag, k) + b"H" * 44  # 48 bytes, like a real header
        out.append((header, view[pos : pos + size - 48]))
        pos += size - 48
    return out


def _wire(datagrams: Sequence[Sequence[Any]]) -> list[bytes]:
    return [b"".join(bytes(p) for p in d) for d in datagrams]


def test_gso_batches_arrive_byte_exact_at_plain_and_gro_receivers(
    pair: Callable[[int], Sockets],
) -> None:
    tx, plain, gro_rx, dest = pair(1)
    gso = net.probe_gso(tx)
    assert gso.describe() == "on (not yet used)"
    sizes = [1472] * 43 + [901]  # 44 segments: the 65,507-byte budget, a short last one
    datagrams = _datagrams(sizes)
    stats = net.SendStats()
    assert net.send_datagrams(tx, dest, datagrams, stats, gso) == 44
    assert (stats.sent, stats.gso_sent, stats.gso_calls, stats.errors) == (44, 44, 1, {})
    assert gso.describe() == "on"
    want = _wire(datagrams)
    assert _drain_plain(plain) == want
    got, per_buffer = _drain_gro(gro_rx)
    assert got == want
    assert per_buffer == [44]  # one recvmsg for the whole batch


def test_forced_fallback_sends_one_datagram_per_call_byte_exact(
    pair: Callable[[int], Sockets],
) -> None:
    tx, plain, gro_rx, dest = pair(2)
    gso = net.probe_gso(tx, want=False)
    assert gso.describe() == "off (--no-gso)"
    datagrams = _datagrams([1472] * 9 + [100])
    stats = net.SendStats()
    assert net.send_datagrams(tx, dest, datagrams, stats, gso) == 10
    assert (stats.sent, stats.gso_calls) == (10, 0)
    want = _wire(datagrams)
    assert _drain_plain(plain) == want
    got, per_buffer = _drain_gro(gro_rx)  # GRO on, but nothing to coalesce on loopback
    assert got == want
    assert per_buffer == [1] * 10


def test_runs_split_at_length_changes_64_segments_and_65507_bytes(
    pair: Callable[[int], Sockets],
) -> None:
    tx, plain, gro_rx, dest = pair(3)
    gso = net.probe_gso(tx)
    # runs: 5x1000 + a shorter 600 ends it | 3x800 | 1200 alone (a longer one follows: plain
    # sendmsg) | 60x1472 -> 44 (65,507 bytes) + 16 with the shorter 300 | 70x500 -> 64 + 6
    sizes = [1000] * 5 + [600] + [800] * 3 + [1200] + [1472] * 60 + [300] + [500] * 70
    datagrams = _datagrams(sizes, tag=3)
    stats = net.SendStats()
    assert net.send_datagrams(tx, dest, datagrams, stats, gso) == len(sizes)
    assert stats.sent == len(sizes)
    assert stats.gso_calls == 6
    assert stats.gso_sent == len(sizes) - 1
    want = _wire(datagrams)
    assert _drain_plain(plain) == want
    got, per_buffer = _drain_gro(gro_rx)
    assert got == want
    assert per_buffer == [6, 3, 1, 44, 17, 64, 6]


def test_gso_refused_by_the_kernel_falls_back_without_losing_a_datagram(
    pair: Callable[[int], Sockets], caplog: pytest.LogCaptureFixture
) -> None:
    """SO_NO_CHECK makes every UDP_SEGMENT send fail with EINVAL (udp_send_skb)."""
    caplog.set_level(logging.INFO, logger="mcastcam.net")
    tx, plain, _gro, dest = pair(4)
    tx.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    gso = net.probe_gso(tx)
    assert gso.enabled  # UDP_SEGMENT is known: only the first real batch tells
    first, second = _datagrams([1472] * 20 + [77], tag=1), _datagrams([1472] * 5, tag=2)
    stats = net.SendStats()
    assert net.send_datagrams(tx, dest, first, stats, gso) == 21
    assert not gso.enabled
    assert gso.describe().startswith("off (a 21 x 1472-byte UDP_SEGMENT batch")
    assert "Invalid argument" in gso.describe()
    assert net.send_datagrams(tx, dest, second, stats, gso) == 5
    assert (stats.sent, stats.gso_calls, stats.errors) == (26, 0, {})
    assert _drain_plain(plain) == _wire(first) + _wire(second)
    assert any("UDP GSO off" in r.getMessage() for r in caplog.records)


def test_errors_in_a_batch_count_every_datagram_and_sending_goes_on(
    pair: Callable[[int], Sockets],
) -> None:
    """A datagram too large for UDP (EMSGSIZE) is dropped alone; the batches around it go."""
    tx, plain, _gro, dest = pair(5)
    gso = net.probe_gso(tx)
    big = (b"H" * 48, memoryview(b"z" * 70_000))
    before, after = _datagrams([1000] * 4, tag=5), _datagrams([1000] * 3, tag=6)
    stats = net.SendStats()
    assert net.send_datagrams(tx, dest, [*before, big, *after], stats, gso) == 8
    assert stats.errors == {errno.EMSGSIZE: 1}
    assert (stats.sent, stats.gso_calls) == (7, 2)
    assert gso.enabled
    assert _drain_plain(plain) == _wire(before) + _wire(after)


class _Recorder:
    """A core that keeps a copy of every datagram it is given."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def receive_datagram(self, data: memoryview, addr: tuple[str, int], now: float) -> None:
        self.got.append(bytes(data))

    def datagrams_to_send(self, now: float) -> list[Any]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_driver_splits_coalesced_buffers_odd_counts_short_last(
    pair: Callable[[int], Sockets], gro: bool
) -> None:
    tx, plain, gro_rx, dest = pair(6 if gro else 7)
    rx = gro_rx if gro else plain
    gso = net.probe_gso(tx)
    batches = [
        _datagrams([1472] * 7 + [333], tag=1),  # 8: odd full count + a short last one
        _datagrams([1100] * 3, tag=2),  # 3 equal
        _datagrams([49], tag=3),  # a lone tiny datagram
        _datagrams([900] * 13 + [899], tag=4),  # short by one byte
    ]
    want = [w for b in batches for w in _wire(b)]

    async def main() -> tuple[list[bytes], int]:
        core = _Recorder()
        driver = Driver(core, lambda out: None, sock=rx, gro=gro, batch=5)
        driver.start()
        try:
            for b in batches:
                assert net.send_datagrams(tx, dest, b, net.SendStats(), gso) == len(b)
            for _ in range(200):  # bounded: at most 2 s
                if len(core.got) >= len(want):
                    break
                await asyncio.sleep(0.01)
        finally:
            driver.close()
        assert driver.truncated == 0
        return core.got, driver.gro_buffers

    got, coalesced = asyncio.run(main())
    assert got == want
    assert coalesced == (3 if gro else 0)
