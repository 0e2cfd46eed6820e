"""Discovery's pure core: the sender's :class:`Responder` and the querier's :class:`Directory`.

No sockets, clocks or randomness here (docs/architecture.md): every method takes ``now`` (monotonic
seconds, ``loop.time()`` scale) and gives back bytes to send; ids are passed in. The shells are
:mod:`mcastcam.discovery.service` (sender side) and :mod:`mcastcam.discovery.query`.

Wire format: ``docs/protocol.md`` kinds 4 (:class:`~mcastcam.protocol.codec.DiscoveryQuery`)
and 5 (:class:`~mcastcam.protocol.codec.DiscoveryAnnounce`).

Safety (issue #5): an answer is one announce, at most :data:`MAX_ANSWER_BYTES` bytes, so a
query never gets a bigger reply than a query of the same size could carry plus the name;
answers are rate-limited by a token bucket driven by ``now`` (``rate`` answers/s, ``burst``
at once), shared by all queriers so a flood with forged source addresses cannot turn a sender
into an amplifier, and by one smaller bucket per querier address (issue #12: ``querier_rate``
answers/s, ``querier_burst`` at once, :data:`MAX_QUERIERS` addresses kept, least recently
heard evicted first) so one address flooding queries cannot use up the shared budget and
starve real queriers; answers go only to unicast addresses on the interface's subnet; garbage and
forged datagrams are counted by reason and dropped, never raised; the :class:`Directory` is
bounded (oldest evicted) and its entries expire.

With a key (``auth``: a :class:`~mcastcam.protocol.trust.DiscoveryAuth`, §9): queries and
announces carry an HMAC under ``k_disc``. A :class:`Responder` answers only queries whose tag
verifies and whose ``query_nonce`` it has not seen lately (a replayed query is refused, so
forged or replayed queries cannot use up the answer budget), echoes the nonce and tags its
announces. A :class:`Directory` drops untagged or badly tagged announces
(``unauthenticated``, ``bad_tag``, ...), drops an answer whose ``echo_query_nonce`` is not
one of its outstanding queries' (``stale_answer``: a replayed answer), and keeps unsolicited
announces (echo 0) as *hints* only (:attr:`Found.answered` false), which a receiver never
follows on its own (:meth:`Directory.entries` ``answers_only``). The random nonces are passed
in (:meth:`Directory.expect`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from mcastcam.errors import ConfigError, DecodeError, LocalProtocolError
from mcastcam.protocol import codec
from mcastcam.protocol.codec import DiscoveryAnnounce, DiscoveryQuery
from mcastcam.protocol.config import (
    DEFAULT_ANNOUNCE_INTERVAL,
    DEFAULT_ANSWER_BURST,
    DEFAULT_ANSWER_RATE,
    Address,
)
from mcastcam.protocol.config import DEFAULT_DISCOVERY_EXPIRY as DEFAULT_EXPIRY
from mcastcam.protocol.config import DEFAULT_DISCOVERY_PORT as DEFAULT_PORT
from mcastcam.protocol.repair import TokenBucket
from mcastcam.protocol.serial import serial_add, serial_lt
from mcastcam.protocol.trust import DiscoveryAuth
from mcastcam.protocol.wire import TAG_SIZE, Transport

__all__ = [
    "DEFAULT_ANNOUNCE_INTERVAL",
    "DEFAULT_EXPIRY",
    "DEFAULT_PORT",
    "DEFAULT_QUERIER_BURST",
    "DEFAULT_QUERIER_RATE",
    "MAX_ANSWER_BYTES",
    "MAX_OUTSTANDING_QUERIES",
    "MAX_QUERIERS",
    "MAX_SEEN_QUERIES",
    "STALE_ANSWER",
    "Address",
    "Directory",
    "DirectoryStats",
    "Found",
    "Responder",
    "ResponderStats",
]

MAX_ANSWER_BYTES = 129
"""Upper bound of one answer datagram (UDP payload bytes): 113, 129 with a tag (§9)."""

DEFAULT_QUERIER_RATE = 1.0
"""Answers per second one querier address earns (a querier sends :data:`QUERY_SENDS
<mcastcam.discovery.query.QUERY_SENDS>` = 3 copies of a query per look-up)."""
DEFAULT_QUERIER_BURST = 3
"""Answers one querier address may get at once: one look-up's 3 query copies."""
MAX_QUERIERS = 1024
"""Querier addresses whose budget is remembered; the least recently heard is forgotten
first (a forgotten address starts again with a full ``querier_burst``)."""
MAX_SEEN_QUERIES = 1024
"""With a key: the ``query_nonce`` values a responder remembers to refuse replayed queries
(least recently seen forgotten first)."""
MAX_OUTSTANDING_QUERIES = 64
"""With a key: the query nonces a directory accepts answers for (oldest forgotten first)."""
STALE_ANSWER = "stale_answer"
"""Reason: an answer echoing a ``query_nonce`` this directory did not ask with (a replay)."""
_REFUSED = frozenset({"unauthenticated", "bad_tag", "unknown_key", "bad_flags", "not_discovery"})


# --------------------------------------------------------------------------- sender side


@dataclass(slots=True)
class ResponderStats:
    """What a :class:`Responder` did, for status lines.

    ``queries``: valid queries received; ``answered``: announces given back to queriers;
    ``rate_limited``: queries over a token bucket, shared or per querier (not answered);
    ``querier_limited``: the part of ``rate_limited`` refused by the querier's own bucket;
    ``queriers_evicted``: querier addresses forgotten by the bound; ``filtered``: queries for
    another name; ``bad_source``: queries from an address we never answer (not unicast, not on
    the subnet, port 0); ``announces``: periodic broadcast announces; ``ignored``: valid
    datagrams of other kinds, by kind name (our own looped-back broadcast announces land here);
    ``garbage``: undecodable datagrams by :attr:`DecodeError.reason <mcastcam.errors.DecodeError>`;
    ``rejected``: with a key, queries refused by reason (``unauthenticated``, ``bad_tag``,
    ``unknown_key``, ``replayed`` query nonce, ``no_nonce``, ...), never answered.
    """

    queries: int = 0
    answered: int = 0
    rate_limited: int = 0
    querier_limited: int = 0
    queriers_evicted: int = 0
    filtered: int = 0
    bad_source: int = 0
    announces: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    garbage: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)


class Responder:
    """Answers discovery queries and schedules periodic broadcast announces (sans-IO).

    Args:
        announce: the stream this sender describes (name, host, transport, group, port, size,
            fps); its ``stream_id`` is the sender's, its ``seq`` the first sequence number
            used. ``host`` should be the sending interface's address: a :class:`Directory`
            drops announces whose source address differs.
        rate: answers per second the token bucket refills (> 0).
        burst: answers the bucket holds (>= 1); at most ``burst + rate * t`` answers are given
            in any ``t`` seconds.
        announce_interval: seconds between broadcast announces; 0 disables them.
        network: only queriers inside this IPv4 network (e.g. ``"198.18.5.0/24"``, the
            interface's subnet) are answered; ``None`` answers any unicast address.
        querier_rate: answers per second one querier address earns (> 0); a query is
            answered only when both its address's bucket and the shared one have a token.
        querier_burst: answers one querier address's bucket holds (>= 1).
        max_queriers: querier addresses remembered (>= 1), least recently heard evicted.
        auth: with a key, verify queries and tag announces (§9); ``None``: no tags.

    Raises:
        ConfigError: a bad ``rate``, ``burst``, ``announce_interval``, ``network``,
            ``querier_rate``, ``querier_burst`` or ``max_queriers``.
        LocalProtocolError: ``announce`` cannot be encoded, or would exceed
            :data:`MAX_ANSWER_BYTES`.
    """

    def __init__(
        self,
        announce: DiscoveryAnnounce,
        *,
        rate: float = DEFAULT_ANSWER_RATE,
        burst: int = DEFAULT_ANSWER_BURST,
        announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL,
        network: str | None = None,
        querier_rate: float = DEFAULT_QUERIER_RATE,
        querier_burst: int = DEFAULT_QUERIER_BURST,
        max_queriers: int = MAX_QUERIERS,
        auth: DiscoveryAuth | None = None,
    ) -> None:
        for what, r, b in (("answer", rate, burst), ("per-querier", querier_rate, querier_burst)):
            if not 0 < r < math.inf:
                raise ConfigError(f"bad discovery {what} rate {r}: must be above 0 per second")
            if b < 1:
                raise ConfigError(f"bad discovery {what} burst {b}: must be at least 1")
        if max_queriers < 1:
            raise ConfigError(f"bad max_queriers {max_queriers}: must be at least 1")
        if not 0 <= announce_interval < math.inf:
            raise ConfigError(
                f"bad announce interval {announce_interval}: must be >= 0 seconds (0 = off)"
            )
        try:
            self._network = ipaddress.IPv4Network(network) if network is not None else None
        except ValueError as err:
            raise ConfigError(f"bad discovery network {network!r}: {err}") from None
        self.rate = rate
        self.burst = burst
        self.announce_interval = announce_interval
        self.stats = ResponderStats()
        _check_size(announce)  # fail fast on an announce the wire cannot carry
        self._announce = announce
        self._seq = announce.seq
        self._tokens = float(burst)
        self._refilled_at: float | None = None
        self.querier_rate = querier_rate
        self.querier_burst = querier_burst
        self.max_queriers = max_queriers
        self._queriers: OrderedDict[str, TokenBucket] = OrderedDict()
        self.auth = auth
        self._seen: OrderedDict[int, None] = OrderedDict()
        # None: no periodic announce; 0.0: the start announce is due at the first call.
        self._next_announce: float | None = 0.0 if announce_interval > 0 else None

    @property
    def announce(self) -> DiscoveryAnnounce:
        """The stream description answered with (``seq`` is that of the last one sent)."""
        return self._announce

    def update(
        self, *, width: int | None = None, height: int | None = None, fps: float | None = None
    ) -> None:
        """The stream changed size (pixels) or rate (frames/s): describe it from now on.

        A change makes the next periodic announce due at once (when announces are on).

        Raises:
            LocalProtocolError: the new values do not fit the wire format.
        """
        changes: dict[str, Any] = {}
        if width is not None:
            changes["width"] = width
        if height is not None:
            changes["height"] = height
        if fps is not None:
            changes["fps_milli"] = round(fps * 1000)
        new = dataclasses.replace(self._announce, **changes)
        if new == self._announce:
            return
        _check_size(new)
        self._announce = new
        if self._next_announce is not None:
            self._next_announce = 0.0

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> list[tuple[bytes, Address]]:
        """Take one datagram that arrived on the discovery port from ``addr``.

        Returns:
            The answers to send: at most one ``(announce datagram, addr)``, unicast back to
            the querier. Nothing for garbage, other kinds, a query for another name, a
            querier we do not answer, or a query over the rate limit (each counted in
            :attr:`stats`); with a key, nothing for a query without a valid tag or with a
            nonce seen lately (``stats.rejected``). Never raises for anything the network
            sends.
        """
        try:
            plain = _unwrap(self.auth, data, self.stats.rejected)
            if plain is None:
                return []
            msg = codec.decode(plain)
        except DecodeError as err:
            self.stats.garbage[err.reason] += 1
            return []
        if not isinstance(msg, DiscoveryQuery):
            self.stats.ignored[type(msg).__name__] += 1
            return []
        if self.auth is not None and not self._fresh_query(msg.query_nonce):
            return []
        self.stats.queries += 1
        if msg.name and msg.name != self._announce.name:
            self.stats.filtered += 1
            return []
        if not self._answerable(addr):
            self.stats.bad_source += 1
            return []
        if not self._querier_bucket(addr[0], now).take(now):
            self.stats.querier_limited += 1
            self.stats.rate_limited += 1
            return []
        if not self._take_token(now):
            self.stats.rate_limited += 1
            return []
        self.stats.answered += 1
        return [(self._encode(msg.query_nonce), addr)]

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """The periodic announce if it is due: broadcast it to ``(iface.broadcast, port)``.

        The first call gives the start announce; then one every ``announce_interval`` s. A
        shell that wakes late sends one announce, not a burst of missed ones.
        """
        if self._next_announce is None or now < self._next_announce:
            return []
        self._next_announce = now + self.announce_interval
        self.stats.announces += 1
        return [self._encode()]

    def get_timer(self) -> float | None:
        """When :meth:`datagrams_to_send` next has something (``now`` scale), or ``None``.

        A value in the past (0.0 before the start announce) means "now".
        """
        return self._next_announce

    def handle_timer(self, now: float) -> None:
        """The timer fired; nothing to update (kept for the core's usual verbs)."""

    # ------------------------------------------------------------------ internals

    def _encode(self, echo: int = 0) -> bytes:
        self._announce = dataclasses.replace(self._announce, seq=self._seq)
        self._seq = serial_add(self._seq, 1)
        if echo == 0 and self.auth is None:
            return codec.encode(self._announce)
        plain = codec.encode(dataclasses.replace(self._announce, echo_query_nonce=echo))
        return plain if self.auth is None else self.auth.seal(plain)

    def _fresh_query(self, nonce: int) -> bool:
        """With a key: a query must carry a nonce not seen among the last ones (bounded)."""
        if nonce == 0:
            self.stats.rejected["no_nonce"] += 1
            return False
        if nonce in self._seen:
            self._seen.move_to_end(nonce)
            self.stats.rejected["replayed"] += 1
            return False
        self._seen[nonce] = None
        if len(self._seen) > MAX_SEEN_QUERIES:
            self._seen.popitem(last=False)
        return True

    def _answerable(self, addr: Address) -> bool:
        try:
            ip = ipaddress.IPv4Address(addr[0])
        except ValueError:
            return False
        if not 0 < addr[1] <= 0xFFFF:
            return False
        if ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255"):
            return False
        net = self._network
        if net is None:
            return True
        special = net.prefixlen < 31 and ip in (net.broadcast_address, net.network_address)
        return ip in net and not special

    def _take_token(self, now: float) -> bool:
        """Take one token of the shared bucket."""
        if self._refilled_at is None:
            self._refilled_at = now
        elif now > self._refilled_at:
            self._tokens = min(
                float(self.burst), self._tokens + (now - self._refilled_at) * self.rate
            )
            self._refilled_at = now
        if self._tokens >= 1.0 - 1e-9:  # tolerate float dust from many small refills
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def _querier_bucket(self, host: str, now: float) -> TokenBucket:
        """The bucket of querier address ``host``, made most recently heard (bounded LRU)."""
        bucket = self._queriers.get(host)
        if bucket is not None:
            self._queriers.move_to_end(host)
            return bucket
        if len(self._queriers) >= self.max_queriers:
            self._queriers.popitem(last=False)
            self.stats.queriers_evicted += 1
        bucket = self._queriers[host] = TokenBucket(self.querier_rate, self.querier_burst, now)
        return bucket

    @property
    def queriers(self) -> int:
        """Querier addresses whose budget is remembered (at most ``max_queriers``)."""
        return len(self._queriers)


def _unwrap(
    auth: DiscoveryAuth | None, data: bytes | bytearray | memoryview, rejected: Counter[str]
) -> bytes | bytearray | memoryview | None:
    """``data``'s plain form: as is without a key; ``None`` (counted) when its tag fails.

    Raises:
        DecodeError: garbage (the prefix's reasons), counted by the caller as without a key.
    """
    if auth is None:
        return data
    try:
        return auth.open(data)
    except DecodeError as err:
        if err.reason not in _REFUSED:
            raise
        rejected[err.reason] += 1
        return None


def _check_size(announce: DiscoveryAnnounce) -> None:
    """Raise :class:`LocalProtocolError` unless ``announce`` encodes to a bounded answer."""
    size = len(codec.encode(announce)) + TAG_SIZE
    if size > MAX_ANSWER_BYTES:  # cannot happen with a 64-byte name: a guard
        raise LocalProtocolError(f"announce of {size} bytes exceeds {MAX_ANSWER_BYTES} bytes")


# --------------------------------------------------------------------------- querier side


@dataclass(frozen=True, slots=True)
class Found:
    """One sender found by discovery.

    ``answered``: the announce answered one of our queries (with a key: its tag verified and
    it echoed our nonce); ``False`` for an unsolicited announce under a key: a hint only.
    ``stream_id``: the sender's random u32; ``host``: its IPv4 address; ``transport``: how the
    stream is sent; ``group``/``port``: where to receive it (the multicast group, the
    broadcast address, or for unicast the address the sender sends to); ``width``/``height``
    in pixels; ``fps`` in frames/s; ``last_seen``: ``now`` of the last announce (monotonic s).
    """

    name: str
    stream_id: int
    host: str
    transport: Transport
    group: str
    port: int
    width: int
    height: int
    fps: float
    last_seen: float
    seq: int = 0
    answered: bool = True

    @property
    def destination(self) -> str:
        """``"group:port"``, e.g. ``"239.255.0.1:8989"``."""
        return f"{self.group}:{self.port}"

    def describe(self) -> str:
        """One line: name, stream id (hex), transport group:port, WxH, fps, host."""
        return (
            f"{self.name or '-'}  stream {self.stream_id:08x}  "
            f"{self.transport.name.lower()} {self.destination}  {self.width}x{self.height}  "
            f"{self.fps:g} fps  host {self.host}"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``stream_id`` as 8 hex digits, ``transport`` as its name)."""
        return {
            "name": self.name,
            "stream_id": f"{self.stream_id:08x}",
            "host": self.host,
            "transport": self.transport.name.lower(),
            "group": self.group,
            "port": self.port,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
        }


@dataclass(slots=True)
class DirectoryStats:
    """What a :class:`Directory` did.

    ``announces``: announces accepted; ``stale``: older than the entry held (reordered);
    ``forged``: announces whose ``host`` is not their source address, or that describe an
    impossible stream (port 0, a multicast transport without a multicast group, ...);
    ``evicted``: entries pushed out by the bound; ``expired``: entries timed out;
    ``ignored``/``garbage``: as :class:`ResponderStats`; ``rejected``: with a key, announces
    dropped by reason (``unauthenticated``, ``bad_tag``, ``unknown_key``, ``stale_answer``,
    ...); ``hints``: unsolicited announces kept as hints.
    """

    announces: int = 0
    stale: int = 0
    forged: int = 0
    evicted: int = 0
    expired: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    garbage: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    hints: int = 0


class Directory:
    """The senders heard on a LAN, one entry per ``(host, stream_id)``, bounded and expiring.

    Args:
        max_entries: at most this many senders are kept; a new one evicts the one heard
            from least recently.
        expiry: seconds after its last announce an entry is dropped (> 0).
        auth: with a key, accept only tagged announces, and answers only to the nonces
            given to :meth:`expect` (§9); ``None``: no tags.

    Raises:
        ConfigError: ``max_entries`` < 1 or ``expiry`` not above 0.
    """

    def __init__(
        self,
        max_entries: int = 64,
        expiry: float = DEFAULT_EXPIRY,
        *,
        auth: DiscoveryAuth | None = None,
    ) -> None:
        if max_entries < 1:
            raise ConfigError(f"bad directory size {max_entries}: must be at least 1")
        if not 0 < expiry < math.inf:
            raise ConfigError(f"bad directory expiry {expiry}: must be above 0 seconds")
        self.max_entries = max_entries
        self.expiry = expiry
        self.stats = DirectoryStats()
        self._entries: dict[tuple[str, int], Found] = {}
        self.auth = auth
        self._outstanding: OrderedDict[int, None] = OrderedDict()

    def expect(self, query_nonce: int) -> None:
        """A query with ``query_nonce`` (random u64, not 0) is being sent: accept its answers.

        The last :data:`MAX_OUTSTANDING_QUERIES` nonces are kept.
        """
        self._outstanding[query_nonce] = None
        if len(self._outstanding) > MAX_OUTSTANDING_QUERIES:
            self._outstanding.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> Found | None:
        """Take one datagram from ``addr``; return the entry it created or refreshed.

        Announces are kept; everything else is counted and ignored (``None``). With a key,
        untagged or badly tagged announces and answers to a nonce not expected are dropped
        (``stats.rejected``) and unsolicited ones kept as hints. Never raises for anything
        the network sends.
        """
        try:
            plain = _unwrap(self.auth, data, self.stats.rejected)
            if plain is None:
                return None
            msg = codec.decode(plain)
        except DecodeError as err:
            if err.reason == "announce_out_of_range":  # the codec's range checks (§9)
                self.stats.forged += 1
            else:
                self.stats.garbage[err.reason] += 1
            return None
        if not isinstance(msg, DiscoveryAnnounce):
            self.stats.ignored[type(msg).__name__] += 1
            return None
        if not _plausible(msg, addr):
            self.stats.forged += 1
            return None
        answered = True
        if self.auth is not None:
            if msg.echo_query_nonce == 0:
                answered = False
            elif msg.echo_query_nonce not in self._outstanding:
                self.stats.rejected[STALE_ANSWER] += 1
                return None
        key = (msg.host, msg.stream_id)
        old = self._entries.get(key)
        if old is not None and serial_lt(msg.seq, old.seq):
            self.stats.stale += 1
            return None
        if old is not None and old.answered and not answered:
            answered = True  # an entry once confirmed by an answer stays confirmed
        elif not answered:
            self.stats.hints += 1
        self.expire(now)
        if old is None and len(self._entries) >= self.max_entries:
            oldest = min(self._entries, key=lambda k: self._entries[k].last_seen)
            del self._entries[oldest]
            self.stats.evicted += 1
        found = Found(
            name=msg.name,
            stream_id=msg.stream_id,
            host=msg.host,
            transport=Transport(msg.transport),
            group=msg.group,
            port=msg.port,
            width=msg.width,
            height=msg.height,
            fps=msg.fps_milli / 1000,
            last_seen=now,
            seq=msg.seq,
            answered=answered,
        )
        self._entries.pop(key, None)  # re-insert: dict order stays by last announce
        self._entries[key] = found
        self.stats.announces += 1
        return found

    def expire(self, now: float) -> None:
        """Drop entries not heard from for ``expiry`` seconds or more."""
        dead = [k for k, f in self._entries.items() if now - f.last_seen >= self.expiry]
        for key in dead:
            del self._entries[key]
        self.stats.expired += len(dead)

    def entries(self, now: float, *, answers_only: bool = False) -> list[Found]:
        """The live senders, sorted by name, then host, then stream id.

        ``answers_only``: leave out hints (unsolicited announces under a key).
        """
        self.expire(now)
        found = (f for f in self._entries.values() if f.answered or not answers_only)
        return sorted(found, key=lambda f: (f.name, f.host, f.stream_id))


def _plausible(msg: DiscoveryAnnounce, addr: Address) -> bool:
    """An announce must come from the host it names and describe a receivable stream."""
    if msg.host != addr[0] or msg.port == 0:
        return False
    try:
        transport = Transport(msg.transport)
    except ValueError:
        return False
    group = ipaddress.IPv4Address(msg.group)
    if transport is Transport.MULTICAST:
        return group.is_multicast
    return not group.is_multicast
