"""The relay's core (pure): a stream over a unicast tunnel to a LAN where multicast does not pass.

Two relays make one tunnel (``mcastcam relay``, docs/scaling.md §1.2):

* the **near** relay joins the stream's group on the sender's LAN and forwards every
  datagram of the stream (source and repair symbols, heartbeats; kinds 1, 2, 16) to the
  peer, **unchanged**: end-to-end tags of an authenticated stream still verify at the far
  receivers, and the relay needs no key;
* the **far** relay multicasts what the tunnel brings on its own LAN (its interface, TTL,
  group). Far receivers send their reports and NACKs (kinds 3, 17) to the source address
  of the heartbeat datagrams they hear (docs/protocol.md §7), that is the far relay's
  multicast socket; it forwards them through the tunnel, and the near relay sends each to
  the sender of its stream (the source address of that stream's heartbeats on the near LAN).
  Whatever a sender sends back to the near relay by unicast (a freshness reply, §8.6) goes
  to the far LAN the same way.

Only datagrams from the configured peer (address and port) are accepted on the tunnel
port. Each relay pings its peer every ``keepalive`` seconds; a peer that has answered no
ping for ``dead_after`` seconds is *down*: nothing but pings is sent to it (at intervals
doubling up to ``retry_max``) until it answers again. :class:`PeerUp` / :class:`PeerDown`
events mark each state change (the shell logs one line each). Every drop is counted by
reason (:attr:`RelayCore.dropped`); queues are bounded in datagrams and bytes and paced in
bytes per second; datagrams from the LANs towards senders are limited per second.

The tunnel's own datagrams (16 bytes, never confused with an mcastcam datagram, whose
magic is ``0x4D43``): ``magic "MR" (0x4D52) | version 1 | type (1 ping, 2 pong) | seq u32 |
t_ns u64`` (big-endian); a pong echoes the ping's ``seq`` and ``t_ns`` (the pinger's own
clock, for the round-trip time). A pong counts only for one of the last 64 pings and only
once (a replayed or forged pong never keeps a silent peer up); the first ping's ``seq`` is
random (the shell's). With a key (``--key-file``, ``RelayConfig.tunnel_keys``) each of them
carries a 16-byte HMAC-SHA256/128 trailer under ``k_relay`` (:func:`~mcastcam.protocol.auth.
relay_key`; untagged ``unauthenticated``, bad ``bad_tag``), and only mcastcam datagrams that
carry ``AUTH`` with a key id the relay holds cross the tunnel either way (others:
``unauthenticated``, ``unknown_key``): the relay checks no tag itself — receivers and
senders verify end to end — but a stranger's untagged traffic never uses the tunnel.

Verbs as every core (docs/architecture.md): :meth:`RelayCore.receive` (which socket, bytes,
address, now), :meth:`RelayCore.datagrams_to_send`, :meth:`RelayCore.next_event`,
:meth:`RelayCore.get_timer` / :meth:`RelayCore.handle_timer`.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from mcastcam.errors import ConfigError, DecodeError
from mcastcam.protocol.auth import TAG_BYTES, tag_control
from mcastcam.protocol.pacing import Pacer
from mcastcam.protocol.repair import TokenBucket
from mcastcam.protocol.trust import tagged_key_id
from mcastcam.protocol.wire import MAGIC, VERSION, Kind

__all__ = [
    "PING",
    "PONG",
    "TUNNEL_CONTROL",
    "TUNNEL_MAGIC",
    "Outgoing",
    "PeerDown",
    "PeerUp",
    "Port",
    "RelayConfig",
    "RelayCore",
    "Role",
    "encode_control",
]

Address = tuple[str, int]

TUNNEL_MAGIC = 0x4D52
"""``"MR"``: the tunnel's own control datagrams."""
TUNNEL_VERSION = 1
TUNNEL_CONTROL = struct.Struct("!HBBIQ")
"""magic, version, type, seq (u32), t_ns (u64): 16 bytes."""
PING, PONG = 1, 2
_PREFIX = struct.Struct("!HBBHII")  # mcastcam prefix: magic version kind flags stream_id seq

STREAM_KINDS = frozenset({int(Kind.SOURCE), int(Kind.HEARTBEAT), int(Kind.REPAIR)})
"""What goes from the sender's LAN to the far LAN."""
BACK_KINDS = frozenset({int(Kind.RECEIVER_REPORT), int(Kind.NACK)})
"""What goes from the far LAN back to the senders."""


class Role(enum.Enum):
    """Which end of the tunnel."""

    NEAR = "near"
    """On the sender's LAN: joins the group, forwards to the peer."""
    FAR = "far"
    """On the far LAN: multicasts what the tunnel brings."""


class Port(enum.Enum):
    """The relay's sockets."""

    GROUP = "group"
    """Near: the socket that joined the stream's group (receive only)."""
    LOCAL = "local"
    """Near: unicast to/from the senders; far: multicast to the LAN, reports/NACKs back."""
    TUNNEL = "tunnel"
    """Unicast to/from the peer relay."""


class Outgoing(NamedTuple):
    """One datagram to send: from which socket, the bytes, to which ``(host, port)``."""

    port: Port
    data: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class PeerUp:
    """The peer answered a ping: forwarding (again).

    ``rtt`` in seconds; ``first``: the peer was never heard before.
    """

    peer: Address
    rtt: float
    first: bool


@dataclass(frozen=True, slots=True)
class PeerDown:
    """The peer answered no ping for ``silent_for`` seconds: forwarding stopped, probing."""

    peer: Address
    silent_for: float
    never_heard: bool
    retry_max: float


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """One relay's settings (validated).

    Args:
        role: :class:`Role`.
        peer: the peer relay's ``(IPv4 address, tunnel port)`` (resolved by the shell).
        out_group: far: ``(group, port)`` to multicast on; near: ``None``.
        keepalive: seconds between two pings while the peer is up (> 0).
        dead_after: seconds without a pong before the peer is down (> keepalive).
        retry_max: longest interval between pings while the peer is down, seconds.
        queue_datagrams: datagrams each outgoing queue holds at most.
        queue_bytes: bytes each outgoing queue holds at most.
        rate: bytes per second each outgoing queue sends at most (paced).
        back_rate: reports/NACKs per second accepted towards the senders (burst: a tenth).
        max_streams: senders remembered (LRU), near side.
        tunnel_keys: ``k_relay`` of each key held (32 bytes each; the first tags pings and
            pongs, any verifies them); empty: no key.
        key_ids: the key ids held: with keys, only datagrams with ``AUTH`` and one of these
            ids are forwarded.

    Raises:
        ConfigError: a value out of range.
    """

    role: Role
    peer: Address
    out_group: Address | None = None
    keepalive: float = 1.0
    dead_after: float = 3.5
    retry_max: float = 10.0
    queue_datagrams: int = 4096
    queue_bytes: int = 4 * 1024 * 1024
    rate: float = 12_500_000.0
    back_rate: float = 2000.0
    max_streams: int = 64
    tunnel_keys: tuple[bytes, ...] = ()
    key_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if any(len(k) != 32 for k in self.tunnel_keys) or bool(self.tunnel_keys) != bool(
            self.key_ids
        ):
            raise ConfigError("tunnel keys are 32 bytes each and come with their key ids")
        if not self.keepalive > 0 or not self.dead_after > self.keepalive:
            raise ConfigError(
                f"bad keepalive {self.keepalive} s / dead after "
                f"{self.dead_after} s: need 0 < keepalive < dead after"
            )
        if not self.retry_max >= self.keepalive:
            raise ConfigError(f"bad retry max {self.retry_max} s: at least the keepalive")
        if self.queue_datagrams < 1 or self.queue_bytes < 65535:
            raise ConfigError(
                f"bad queue {self.queue_datagrams} datagrams, "
                f"{self.queue_bytes} bytes: need >= 1 and >= 65535"
            )
        if not self.rate > 0 or not self.back_rate > 0:
            raise ConfigError(f"bad rate {self.rate} B/s or back rate {self.back_rate}/s")
        if self.max_streams < 1:
            raise ConfigError(f"bad max streams {self.max_streams}")
        if (self.role is Role.FAR) != (self.out_group is not None):
            raise ConfigError("a far relay needs an out group; a near relay has none")


def encode_control(kind: int, seq: int, t_ns: int, key: bytes | None = None) -> bytes:
    """A tunnel control datagram: ``kind`` :data:`PING` or :data:`PONG`.

    16 bytes; 32 with ``key`` (``k_relay``): the HMAC-SHA256/128 trailer appended.
    """
    plain = TUNNEL_CONTROL.pack(TUNNEL_MAGIC, TUNNEL_VERSION, kind, seq & 0xFFFFFFFF,
                                t_ns & 0xFFFFFFFFFFFFFFFF)  # fmt: skip
    return plain if key is None else plain + tag_control(key, plain)


@dataclass(slots=True)
class _Queue:
    """A bounded FIFO of datagrams, paced in bytes per second."""

    max_datagrams: int
    max_bytes: int
    pacer: Pacer
    items: deque[Outgoing] = field(default_factory=deque)
    size: int = 0

    def put(self, item: Outgoing) -> bool:
        if len(self.items) >= self.max_datagrams or self.size + len(item.data) > self.max_bytes:
            return False
        self.items.append(item)
        self.size += len(item.data)
        return True

    def take(self, now: float, out: list[Outgoing]) -> None:
        items, pacer = self.items, self.pacer
        while items and pacer.can_send(now):
            item = items.popleft()
            self.size -= len(item.data)
            pacer.on_sent(len(item.data), now)
            out.append(item)

    def clear(self) -> int:
        n = len(self.items)
        self.items.clear()
        self.size = 0
        return n

    def deadline(self) -> float | None:
        return self.pacer.next_send_time() if self.items else None


class RelayCore:
    """One end of a relay tunnel (pure).

    Args:
        cfg: :class:`RelayConfig`.
        now: the time it starts at (monotonic seconds); the first ping is due then (a
            ping's ``t_ns`` is ``now`` in ns: only this relay reads it back).
        first_ping_seq: the first ping's ``seq`` (u32; the shell draws it at random).

    Attributes:
        state: ``"connecting"`` (no pong yet), ``"up"`` or ``"down"``.
        dropped: datagrams dropped, by reason: ``not_peer`` (on the tunnel port from anyone
            but the peer), ``not_mcastcam`` (no v2 prefix), ``kind`` (a kind this direction
            does not carry), ``unknown_stream`` (a report/NACK for a stream no heartbeat
            named), ``not_sender`` (unicast on the near relay's local socket from a host that
            is no sender), ``peer_down`` (the peer is down: not sent), ``queue_full``,
            ``rate_limited`` (reports/NACKs beyond ``back_rate``), ``bad_control``, and with
            a key ``unauthenticated`` (no ``AUTH``, or an untagged ping or pong), the
            codec's prefix reasons (``truncated``, ``bad_flags``, ...; see
            :func:`~mcastcam.protocol.trust.tagged_key_id`), ``unknown_key``, ``bad_tag`` (a
            ping or pong), ``replayed`` (a pong already counted).
        forwarded: datagrams sent on, by direction: ``to_peer``, ``to_lan`` (far:
            multicast), ``to_sender`` (near); ``forwarded_bytes`` likewise.
        rtt: the latest ping round-trip time, seconds (``None`` before the first pong).
    """

    def __init__(self, cfg: RelayConfig, now: float, first_ping_seq: int = 0) -> None:
        self.cfg = cfg
        self._key = cfg.tunnel_keys[0] if cfg.tunnel_keys else None
        self.state = "connecting"
        self.dropped: dict[str, int] = {}
        self.forwarded: dict[str, int] = {"to_peer": 0, "to_lan": 0, "to_sender": 0}
        self.forwarded_bytes: dict[str, int] = dict.fromkeys(self.forwarded, 0)
        self.pings_sent = 0
        self.pongs_received = 0
        self.rtt: float | None = None
        self.state_changes = 0
        self._started = now
        self._last_pong: float | None = None
        self._ping_seq = first_ping_seq & 0xFFFFFFFF
        self._pong_seq: int | None = None  # the newest pong counted
        self._next_ping = now
        self._retry = cfg.keepalive
        self._urgent: list[Outgoing] = []
        self._events: deque[PeerUp | PeerDown] = deque()
        self._to_peer = self._queue(now)
        self._to_local = self._queue(now)
        self._back = TokenBucket(cfg.back_rate, max(1.0, cfg.back_rate / 10), now)
        self._senders: OrderedDict[int, Address] = OrderedDict()

    def _queue(self, now: float) -> _Queue:
        pacer = Pacer(burst_interval=0.004, min_burst=65535)
        pacer.set_rate(self.cfg.rate, now)
        return _Queue(self.cfg.queue_datagrams, self.cfg.queue_bytes, pacer)

    # ------------------------------------------------------------------ input

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def receive(self, port: Port, data: bytes | bytearray | memoryview, addr: Address,
                now: float) -> None:  # fmt: skip
        """Take one datagram that arrived on ``port`` from ``addr`` at ``now`` (copied)."""
        far = self.cfg.role is Role.FAR
        if port is Port.TUNNEL:
            if addr != self.cfg.peer:
                self._drop("not_peer")
                return
            if len(data) >= 2 and data[0] == 0x4D and data[1] == 0x52:
                self._control(bytes(data), now)
                return
            prefix = self._prefix(data)
            if prefix is None or not self._kind_ok(prefix[0], STREAM_KINDS if far else BACK_KINDS):
                return
            if far:
                assert self.cfg.out_group is not None
                self._put(self._to_local, Outgoing(Port.LOCAL, bytes(data), self.cfg.out_group))
                return
            sender = self._senders.get(prefix[1])
            if sender is None:
                self._drop("unknown_stream")
            elif self._back_ok(now):
                self._put(self._to_local, Outgoing(Port.LOCAL, bytes(data), sender))
            return
        prefix = self._prefix(data)
        if prefix is None:
            return
        kind, stream_id = prefix
        if far:  # the local socket: reports and NACKs of the far receivers
            if not self._kind_ok(kind, BACK_KINDS) or not self._back_ok(now):
                return
        elif port is Port.GROUP:
            if not self._kind_ok(kind, STREAM_KINDS):
                return
            if kind == Kind.HEARTBEAT:
                self._learn(stream_id, addr)
        elif addr not in self._senders.values():
            self._drop("not_sender")
            return
        if self.state != "up":
            self._drop("peer_down")
            return
        self._put(self._to_peer, Outgoing(Port.TUNNEL, bytes(data), self.cfg.peer))

    def _kind_ok(self, kind: int, kinds: frozenset[int]) -> bool:
        if kind in kinds:
            return True
        self._drop("kind")
        return False

    def _back_ok(self, now: float) -> bool:
        """Whether one more report/NACK towards the senders fits in ``back_rate``."""
        if self._back.take(now):
            return True
        self._drop("rate_limited")
        return False

    def _prefix(self, data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
        """``(kind, stream_id)`` of a version 2 mcastcam datagram, else counted and ``None``."""
        if len(data) < _PREFIX.size:
            self._drop("not_mcastcam")
            return None
        magic, version, kind, _flags, stream_id, _seq = _PREFIX.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            self._drop("not_mcastcam")
            return None
        key_ids = self.cfg.key_ids
        if key_ids:
            try:
                key_id = tagged_key_id(data)
            except DecodeError as exc:
                self._drop(exc.reason)  # unauthenticated, truncated, bad_flags, ...
                return None
            if key_id not in key_ids:
                self._drop("unknown_key")
                return None
        return kind, stream_id

    def _learn(self, stream_id: int, addr: Address) -> None:
        senders = self._senders
        if senders.get(stream_id) != addr:
            senders[stream_id] = addr
        senders.move_to_end(stream_id)
        while len(senders) > self.cfg.max_streams:
            senders.popitem(last=False)

    def _put(self, queue: _Queue, item: Outgoing) -> None:
        if not queue.put(item):
            self._drop("queue_full")

    def _verified(self, data: bytes) -> bytes | None:
        """The 16-byte control datagram, its tag checked with a key; counted drop: ``None``."""
        size = TUNNEL_CONTROL.size
        if not self.cfg.tunnel_keys:
            if len(data) == size:
                return data
            self._drop("bad_control")
            return None
        if len(data) == size:
            self._drop("unauthenticated")
            return None
        if len(data) != size + TAG_BYTES:
            self._drop("bad_control")
            return None
        plain, tag = data[:size], data[size:]
        if any(hmac.compare_digest(tag_control(k, plain), tag) for k in self.cfg.tunnel_keys):
            return plain
        self._drop("bad_tag")
        return None

    def _control(self, data: bytes, now: float) -> None:
        plain = self._verified(data)
        if plain is None:
            return
        _magic, version, kind, seq, t_ns = TUNNEL_CONTROL.unpack(plain)
        if version != TUNNEL_VERSION or kind not in (PING, PONG):
            self._drop("bad_control")
            return
        if kind == PING:  # answer at once, whatever our own state
            self._urgent.append(Outgoing(Port.TUNNEL, encode_control(PONG, seq, t_ns, self._key),
                                         self.cfg.peer))  # fmt: skip
            return
        if not 0 <= (self._ping_seq - 1 - seq) & 0xFFFFFFFF < 64:  # not one of our last pings
            self._drop("bad_control")
            return
        if self._pong_seq is not None and not 0 < (seq - self._pong_seq) & 0xFFFFFFFF < 64:
            self._drop("replayed")  # this pong, or one of a later ping, was counted already
            return
        self._pong_seq = seq
        self.pongs_received += 1
        sent_at = t_ns / 1e9
        self.rtt = max(0.0, now - sent_at) if sent_at <= now else None
        first = self._last_pong is None
        self._last_pong = now
        if self.state != "up":
            self.state = "up"
            self.state_changes += 1
            self._retry = self.cfg.keepalive
            self._next_ping = now + self.cfg.keepalive
            self._events.append(PeerUp(self.cfg.peer, self.rtt or 0.0, first))

    # ------------------------------------------------------------------ output

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        """Pings and pongs, then what the queues' pacing allows at ``now``."""
        self._tick(now)
        out, self._urgent = self._urgent, []
        self._to_peer.take(now, out)
        self._to_local.take(now, out)
        for item in out:
            if item.port is Port.TUNNEL:
                if item.data[:2] != b"MR":
                    self.forwarded["to_peer"] += 1
                    self.forwarded_bytes["to_peer"] += len(item.data)
            else:
                key = "to_lan" if self.cfg.role is Role.FAR else "to_sender"
                self.forwarded[key] += 1
                self.forwarded_bytes[key] += len(item.data)
        return out

    def next_event(self) -> PeerUp | PeerDown | None:
        """The next state change, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline: next ping, peer timeout, paced queue (monotonic seconds)."""
        times = [self._next_ping]
        if self.state != "down":
            times.append((self._last_pong or self._started) + self.cfg.dead_after)
        for queue in (self._to_peer, self._to_local):
            at = queue.deadline()
            if at is not None:
                times.append(at)
        return min(times)

    def handle_timer(self, now: float) -> None:
        """The deadline was reached (idempotent: checks every deadline against ``now``)."""
        self._tick(now)

    def _tick(self, now: float) -> None:
        cfg = self.cfg
        if self.state != "down":
            since = self._last_pong if self._last_pong is not None else self._started
            if now - since >= cfg.dead_after:
                self._events.append(PeerDown(cfg.peer, now - since, self._last_pong is None,
                                             cfg.retry_max))  # fmt: skip
                self.state = "down"
                self.state_changes += 1
                self._retry = cfg.keepalive
                n = self._to_peer.clear()  # what waits for a silent peer is stale
                if n:
                    self.dropped["peer_down"] = self.dropped.get("peer_down", 0) + n
        if now >= self._next_ping:
            self._urgent.append(Outgoing(Port.TUNNEL, encode_control(
                PING, self._ping_seq, round(now * 1e9), self._key), cfg.peer))  # fmt: skip
            self._ping_seq = (self._ping_seq + 1) & 0xFFFFFFFF
            self.pings_sent += 1
            if self.state == "down":
                self._retry = min(cfg.retry_max, self._retry * 2)
                self._next_ping = now + self._retry
            else:
                self._next_ping = now + cfg.keepalive

    # ------------------------------------------------------------------ status

    def senders(self) -> dict[int, Address]:
        """Stream id -> the sender's address (near side: from its heartbeats)."""
        return dict(self._senders)

    def queued(self) -> dict[str, int]:
        """Datagrams and bytes waiting in the queues."""
        return {
            "to_peer": len(self._to_peer.items),
            "to_peer_bytes": self._to_peer.size,
            "local": len(self._to_local.items),
            "local_bytes": self._to_local.size,
        }
