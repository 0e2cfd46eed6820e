"""The relay's pure core (mcastcam/protocol/relay.py) under scripted time: two cores wired
back to back, forwarding byte-exact, the peer filter, pings, a silent peer, bounds."""

from __future__ import annotations

import pytest

from mcastcam.errors import ConfigError
from mcastcam.protocol.auth import MasterKey, relay_key
from mcastcam.protocol.codec import Heartbeat, NackEntry, ReceiverReport, decode, encode
from mcastcam.protocol.relay import (
    PING,
    PONG,
    Outgoing,
    PeerDown,
    PeerUp,
    Port,
    RelayConfig,
    RelayCore,
    Role,
    encode_control,
)
from mcastcam.protocol.reports import Reporter
from mcastcam.protocol.wire import Flag

SENDER = ("198.18.0.2", 41000)  # the sender's socket on the near LAN
NEAR = ("198.18.0.3", 7000)  # near relay's tunnel socket
FAR = ("198.18.1.2", 7000)  # far relay's tunnel socket
FAR_LOCAL = ("198.18.1.2", 45000)  # far relay's multicast socket
OUT = ("239.255.9.9", 5004)
RX = ("198.18.1.3", 46000)


def heartbeat(stream_id: int = 7, seq: int = 1) -> bytes:
    return encode(Heartbeat(stream_id=stream_id, seq=seq, name="cam", host=SENDER[0],
                            source_state=0, width=640, height=480, fps_milli=30000,
                            interval_ms=1000, frames_sent=1, datagrams_sent=5, uptime_ns=1,
                            send_ts_ns=1, audience=0, run_nonce=0x5EED))  # fmt: skip


def symbol(stream_id: int = 7, seq: int = 2, size: int = 1000) -> bytes:
    """A datagram with a v2 source-symbol prefix (the relay reads only the prefix)."""
    head = bytes.fromhex("4d430201 0000") + stream_id.to_bytes(4, "big") + seq.to_bytes(4, "big")
    return head + bytes((seq + i) % 251 for i in range(size - len(head)))


def report(stream_id: int = 7) -> bytes:
    return encode(ReceiverReport(stream_id=stream_id, seq=0, receiver_id=99, name="rx",
                                 host=RX[0], frames_completed=1, frames_dropped=0, loss_ppm=0,
                                 echo_ts_ns=1, held_ns=0, run_nonce=0x5EED))  # fmt: skip


class Pair:
    """A near and a far core; :meth:`step` delivers what each sends to the other (no loss)."""

    def __init__(self, **kw: object) -> None:
        self.near = RelayCore(RelayConfig(Role.NEAR, FAR, **kw), 0.0)  # type: ignore[arg-type]
        self.far = RelayCore(RelayConfig(Role.FAR, NEAR, out_group=OUT, **kw), 0.0)  # type: ignore[arg-type]
        self.lan: list[Outgoing] = []  # far's multicast
        self.to_sender: list[Outgoing] = []
        self.events: list[object] = []
        self.cut = False

    def step(self, now: float) -> None:
        for _ in range(100):
            moved = False
            for core, peer_core, me in ((self.near, self.far, NEAR), (self.far, self.near, FAR)):
                core.handle_timer(now)
                for out in core.datagrams_to_send(now):
                    if out.port is Port.TUNNEL:
                        if not self.cut:
                            peer_core.receive(Port.TUNNEL, out.data, me, now)
                            moved = True
                    elif core is self.far:
                        self.lan.append(out)
                    else:
                        self.to_sender.append(out)
                while (ev := core.next_event()) is not None:
                    self.events.append(ev)
            if not moved:
                return

    def run(self, start: float, end: float, step: float = 0.01) -> float:
        now = start
        while now < end:
            self.step(now)
            now = round(now + step, 6)
        return now


def test_stream_crosses_unchanged_and_reports_come_back_to_the_sender() -> None:
    p = Pair()
    p.near.receive(Port.GROUP, symbol(), SENDER, 0.0)  # before the peer answered: not sent
    assert p.near.dropped == {"peer_down": 1}
    p.step(0.0)
    assert p.near.state == p.far.state == "up"
    assert [type(e) for e in p.events] == [PeerUp, PeerUp]
    sent = [heartbeat(), symbol(seq=2), symbol(seq=3, size=1400)]
    for d in sent:
        p.near.receive(Port.GROUP, memoryview(bytearray(d)), SENDER, 0.1)
    p.step(0.1)
    assert [o.data for o in p.lan] == sent and {o.addr for o in p.lan} == {OUT}
    assert all(o.port is Port.LOCAL for o in p.lan)
    assert p.near.senders() == {7: SENDER}
    # a far receiver reports to the heartbeat's source address: the far relay's socket
    rep = Reporter(99, "rx", RX[0], rng=None)
    rep.on_heartbeat(decode(p.lan[0].data), FAR_LOCAL, 0.1)  # type: ignore[arg-type]
    assert rep.destination() == FAR_LOCAL
    nack = rep.nack((NackEntry(frame_id=3, needed=2),))
    assert nack is not None
    p.far.receive(Port.LOCAL, nack[0], RX, 0.2)
    p.far.receive(Port.LOCAL, report(), RX, 0.2)
    p.far.receive(Port.LOCAL, report(stream_id=8), RX, 0.2)  # nobody's stream
    p.step(0.2)
    assert [(o.data, o.addr) for o in p.to_sender] == [(nack[0], SENDER), (report(), SENDER)]
    assert p.near.dropped == {"peer_down": 1, "unknown_stream": 1}
    assert p.near.forwarded["to_peer"] == 3 and p.far.forwarded["to_lan"] == 3
    assert p.far.forwarded["to_peer"] == 3 and p.near.forwarded["to_sender"] == 2


def test_only_the_peer_is_heard_on_the_tunnel_and_kinds_are_filtered() -> None:
    p = Pair()
    p.step(0.0)
    far = p.far
    far.receive(Port.TUNNEL, symbol(), ("198.18.1.66", 7000), 0.1)  # a stranger
    far.receive(Port.TUNNEL, symbol(), (NEAR[0], 7001), 0.1)  # the peer's host, other port
    far.receive(Port.TUNNEL, encode_control(PING, 1, 1), ("198.18.1.66", 7000), 0.1)
    far.receive(Port.TUNNEL, report(), NEAR, 0.1)  # reports do not go to the far LAN
    far.receive(Port.TUNNEL, b"\x4d\x43\x01" + bytes(20), NEAR, 0.1)  # version 1
    far.receive(Port.TUNNEL, b"MR" + bytes(3), NEAR, 0.1)
    far.receive(Port.LOCAL, symbol(), RX, 0.1)  # a symbol sent to the far relay's socket
    assert far.dropped == {"not_peer": 3, "kind": 2, "not_mcastcam": 1, "bad_control": 1}
    near = p.near
    near.receive(Port.GROUP, report(), RX, 0.1)  # not a stream kind
    near.receive(Port.LOCAL, symbol(), ("198.18.0.77", 1), 0.1)  # unicast from a non-sender
    assert near.dropped == {"kind": 1, "not_sender": 1}
    p.step(0.1)
    assert p.lan == [] and p.to_sender == []


def test_silent_peer_one_event_bounded_probes_and_recovery() -> None:
    p = Pair(keepalive=1.0, dead_after=3.5, retry_max=8.0)
    p.step(0.0)
    p.events.clear()
    p.cut = True
    pings_before = p.near.pings_sent
    now = p.run(0.01, 60.0)
    downs = [e for e in p.events if isinstance(e, PeerDown)]
    assert len(downs) == 2 and len(p.events) == 2  # one per side, once
    assert downs[0].silent_for == pytest.approx(3.5, abs=0.02) and not downs[0].never_heard
    # probes: 1 s while up, then 2, 4, 8, 8 ... s: bounded
    assert p.near.pings_sent - pings_before <= 4 + 60 // 8 + 2
    p.near.receive(Port.GROUP, symbol(), SENDER, now)
    assert p.near.dropped["peer_down"] == 1 and p.near.queued()["to_peer"] == 0
    p.cut = False
    p.events.clear()
    p.run(now, now + 9.0)
    assert [type(e) for e in p.events] == [PeerUp, PeerUp]
    assert p.near.state == "up" and p.near.state_changes == 3


def test_never_answering_peer_is_reported_once() -> None:
    near = RelayCore(RelayConfig(Role.NEAR, FAR), 0.0)
    events = []
    for i in range(3000):
        now = i * 0.01
        near.handle_timer(now)
        near.datagrams_to_send(now)
        while (ev := near.next_event()) is not None:
            events.append(ev)
    assert len(events) == 1 and isinstance(events[0], PeerDown) and events[0].never_heard
    assert near.pings_sent <= 4 + 30 // 10 + 2
    assert near.get_timer() is not None


def test_queues_are_bounded_and_paced() -> None:
    p = Pair(queue_datagrams=10, queue_bytes=200_000, rate=100_000.0)
    p.step(0.0)
    for i in range(30):
        p.near.receive(Port.GROUP, symbol(seq=i, size=10_000), SENDER, 0.5)
    assert p.near.dropped == {"queue_full": 20} and p.near.queued()["to_peer_bytes"] == 100_000
    out = p.near.datagrams_to_send(0.5)
    assert 0 < len(out) < 10  # a 64 KiB burst, not all ten
    timer = p.near.get_timer()
    assert timer is not None and 0.5 < timer <= 1.0
    sent, now = len(out), 0.5
    for _ in range(100):
        if sent == 10:
            break
        now = p.near.get_timer() or now
        sent += len(p.near.datagrams_to_send(now))
    assert sent == 10 and now >= 0.5 + (100_000 - 65_535) / 100_000 - 0.05
    small = Pair(queue_datagrams=1000, queue_bytes=65_535)
    small.step(0.0)
    for i in range(10):
        small.near.receive(Port.GROUP, symbol(seq=i, size=10_000), SENDER, 0.5)
    assert small.near.dropped == {"queue_full": 4}  # bytes bound


def test_reports_towards_the_sender_are_rate_limited() -> None:
    p = Pair(back_rate=100.0)
    p.step(0.0)
    for _ in range(50):
        p.far.receive(Port.LOCAL, report(), RX, 0.1)
    assert p.far.dropped == {"rate_limited": 40}  # burst of a tenth of a second


@pytest.mark.parametrize("kw", [dict(keepalive=0), dict(dead_after=0.5), dict(queue_bytes=10),
                                dict(rate=0), dict(retry_max=0.1)])  # fmt: skip
def test_config_refuses_bad_values(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RelayConfig(Role.NEAR, FAR, **kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        RelayConfig(Role.FAR, NEAR)  # a far relay needs a group to multicast on


# --- with a key (--key-file): tagged pings and pongs, tagged datagrams only ------------------

MASTER = MasterKey(3, bytes(range(32)))
KEYED = {"tunnel_keys": (relay_key(MASTER),), "key_ids": frozenset({3})}


def tagged(d: bytes, key_id: int = 3) -> bytes:
    """``d`` with ``AUTH`` set, ``key_id`` at its place and a 16-byte trailer (not a valid
    tag: the relay checks no end-to-end tag, receivers do)."""
    b = bytearray(d)
    b[4:6] = (int.from_bytes(b[4:6], "big") | int(Flag.AUTH)).to_bytes(2, "big")
    b[41 if b[3] in (1, 16) else 14] = key_id
    return bytes(b) + bytes(16)


def test_keyed_pair_tags_pings_and_forwards_only_tagged_datagrams() -> None:
    p = Pair(**KEYED)
    p.step(0.0)
    assert p.near.state == p.far.state == "up" and p.near.dropped == {}
    sent = [tagged(heartbeat()), tagged(symbol(seq=2)), tagged(symbol(seq=3, size=1400))]
    for d in [*sent, heartbeat(), symbol(seq=4), tagged(symbol(seq=5), key_id=4)]:
        p.near.receive(Port.GROUP, d, SENDER, 0.1)
    p.step(0.1)
    assert [o.data for o in p.lan] == sent
    assert p.near.dropped == {"unauthenticated": 2, "unknown_key": 1}
    p.far.receive(Port.LOCAL, report(), RX, 0.2)  # an untagged report towards the sender
    p.far.receive(Port.LOCAL, tagged(report()), RX, 0.2)
    p.step(0.2)
    assert [o.data for o in p.to_sender] == [tagged(report())]
    assert p.far.dropped == {"unauthenticated": 1}


def test_keyed_relay_refuses_untagged_forged_and_replayed_pongs() -> None:
    near = RelayCore(RelayConfig(Role.NEAR, FAR, **KEYED), 0.0, first_ping_seq=0xFFFFFFFE)  # type: ignore[arg-type]
    (ping,) = near.datagrams_to_send(0.0)
    assert len(ping.data) == 32 and ping.data[:16] == encode_control(PING, 0xFFFFFFFE, 0)
    pong = encode_control(PONG, 0xFFFFFFFE, 0, relay_key(MASTER))
    near.receive(Port.TUNNEL, pong[:16], FAR, 0.01)  # untagged
    near.receive(Port.TUNNEL, pong[:16] + bytes(16), FAR, 0.01)  # a forged tag
    other = encode_control(PONG, 0xFFFFFFFE, 0, relay_key(MasterKey(3, bytes(32))))
    near.receive(Port.TUNNEL, other, FAR, 0.01)  # another key
    assert near.state == "connecting" and near.pongs_received == 0
    near.receive(Port.TUNNEL, pong, FAR, 0.01)
    assert near.state == "up" and near.pongs_received == 1
    near.receive(Port.TUNNEL, pong, FAR, 0.02)  # the same pong again
    assert near.pongs_received == 1
    assert near.dropped == {"unauthenticated": 1, "bad_tag": 2, "replayed": 1}
    # a ping from the peer is answered with a tagged pong; an untagged one is not
    near.receive(Port.TUNNEL, encode_control(PING, 9, 5), FAR, 0.03)
    near.receive(Port.TUNNEL, encode_control(PING, 9, 5, relay_key(MASTER)), FAR, 0.03)
    (answer,) = near.datagrams_to_send(0.03)
    assert answer.data == encode_control(PONG, 9, 5, relay_key(MASTER))


def test_unkeyed_relay_counts_a_pong_once_and_only_for_its_last_pings() -> None:
    near = RelayCore(RelayConfig(Role.NEAR, FAR), 0.0, first_ping_seq=100)
    near.datagrams_to_send(0.0)  # ping 100
    near.receive(Port.TUNNEL, encode_control(PONG, 101, 0), FAR, 0.01)  # not sent yet
    near.receive(Port.TUNNEL, encode_control(PONG, 100, 0), FAR, 0.01)
    near.receive(Port.TUNNEL, encode_control(PONG, 100, 0), FAR, 0.02)
    near.receive(Port.TUNNEL, encode_control(PONG, 100, 0, relay_key(MASTER)), FAR, 0.02)
    assert near.pongs_received == 1
    assert near.dropped == {"bad_control": 2, "replayed": 1}


def test_config_refuses_keys_without_ids() -> None:
    with pytest.raises(ConfigError):
        RelayConfig(Role.NEAR, FAR, tunnel_keys=(bytes(32),))
    with pytest.raises(ConfigError):
        RelayConfig(Role.NEAR, FAR, tunnel_keys=(bytes(16),), key_ids=frozenset({1}))
