"""Configuration: frozen, validated dataclasses, and every default defined once (pure).

The command-line programs turn their options into these objects and pass the objects around,
never an ``argparse.Namespace``. Each class checks its values in ``__post_init__`` and raises
:class:`~mcastcam.errors.ConfigError` naming the bad value the way the command line spells it
(``--spread 2.0: must be from 0 to 1``), so a bad value is one clear line and exit status 2.

Defaults live here only: the CLIs' ``--help`` texts, the cores and the shells import them.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mcastcam.errors import ConfigError, LocalProtocolError
from mcastcam.protocol.codec import (
    MAX_INTERVAL_MS,
    MAX_NACK_DELAY_MS,
    MAX_NACK_RATE_MILLI,
    MAX_REPAIR_WINDOW_MS,
    MAX_SYMBOL_SIZE,
    MIN_INTERVAL_MS,
    MIN_SYMBOL_SIZE,
    SYMBOL_ALIGNMENT,
)
from mcastcam.protocol.fragmenter import symbol_size_for_mtu
from mcastcam.protocol.recording import RecordLimits
from mcastcam.protocol.repair import FecMode
from mcastcam.protocol.wire import MAX_NAME_BYTES

__all__ = [
    "DEFAULT_ANNOUNCE_INTERVAL",
    "DEFAULT_ANSWER_BURST",
    "DEFAULT_ANSWER_RATE",
    "DEFAULT_DISCOVERY_EXPIRY",
    "DEFAULT_DISCOVERY_PORT",
    "DEFAULT_DISCOVERY_TIMEOUT",
    "DEFAULT_FPS",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_GROUP",
    "DEFAULT_GROUP_ADDRESS",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_LOG_INTERVAL",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MTU",
    "DEFAULT_NACK_DELAY",
    "DEFAULT_NACK_RATE",
    "DEFAULT_PORT",
    "DEFAULT_QUALITY",
    "DEFAULT_RCVBUF",
    "DEFAULT_REPAIR_FRAMES",
    "DEFAULT_REPAIR_WINDOW",
    "DEFAULT_SPREAD",
    "DEFAULT_SUBSAMPLING",
    "DEFAULT_SYMBOL_SIZE",
    "DEFAULT_TTL",
    "Address",
    "DiscoveryConfig",
    "QueryConfig",
    "ReceiverConfig",
    "SenderConfig",
    "SenderRunConfig",
    "SourceConfig",
]

Address = tuple[str, int]
"""``(IPv4 dotted quad, UDP port)``."""

# ----------------------------------------------------------------------------- defaults

DEFAULT_GROUP_ADDRESS = "239.255.0.1"
"""The default multicast group (organisation-local scope, RFC 2365)."""
DEFAULT_PORT = 8989
"""The default UDP port of the stream (group, broadcast and unicast)."""
DEFAULT_GROUP = f"{DEFAULT_GROUP_ADDRESS}:{DEFAULT_PORT}"
"""``--group``'s default, ``"239.255.0.1:8989"``."""
DEFAULT_TTL = 1
"""Multicast TTL: 1 keeps datagrams on this LAN."""
DEFAULT_HEARTBEAT_INTERVAL = 1.0
"""Seconds between two sender heartbeats (``--heartbeat-interval``)."""
DEFAULT_SPREAD = 0.5
"""Fraction of the frame interval a frame's datagrams are spread over (``--spread``)."""
DEFAULT_FPS = 30.0
"""Frames per second of file, folder, sample and test-pattern sources."""
DEFAULT_QUALITY = 80
"""JPEG quality (1-100) of frames mcastcam encodes itself (YUYV camera, test pattern)."""
DEFAULT_SUBSAMPLING = "422"
"""Chroma subsampling of frames mcastcam encodes: ``"422"`` or ``"420"``."""
DEFAULT_DISCOVERY_PORT = 8990
"""The discovery UDP port (``--discovery-port``)."""
DEFAULT_ANNOUNCE_INTERVAL = 5.0
"""Seconds between two periodic broadcast announces (``--announce-interval``)."""
DEFAULT_DISCOVERY_EXPIRY = 3 * DEFAULT_ANNOUNCE_INTERVAL
"""Seconds a discovery directory keeps a sender it has not heard from (three announces)."""
DEFAULT_DISCOVERY_TIMEOUT = 1.0
"""Seconds a discovery query waits for answers."""
DEFAULT_ANSWER_RATE = 5.0
"""Discovery answers per second a sender gives at most (token bucket refill)."""
DEFAULT_ANSWER_BURST = 5
"""Discovery answers a sender gives at once after a silence (token bucket size)."""
DEFAULT_MTU = 1500
"""Ethernet's MTU, bytes."""
DEFAULT_SYMBOL_SIZE = symbol_size_for_mtu(DEFAULT_MTU)
"""Symbol size T, bytes, that fits :data:`DEFAULT_MTU` without a key (1424)."""
DEFAULT_NACK_DELAY = 0.002
"""Seconds a receiver waits after a frame's last planned datagram before its first NACK (2 ms:
the NACK round must fit in a frame interval, issue #11; it was 5 ms)."""
DEFAULT_NACK_RATE = 10.0
"""NACK datagrams per second a sender accepts from one receiver (0 = NACKs off)."""
DEFAULT_REPAIR_WINDOW = 0.5
"""Seconds after a frame's first datagram during which the sender answers NACKs for it."""
DEFAULT_REPAIR_FRAMES = 64
"""Most frames a sender keeps for NACK repair (each holds its RaptorQ encoder)."""
DEFAULT_LOG_INTERVAL = 60.0
"""Seconds between two log lines about the same kind of dropped datagram."""


def _bad(name: str, value: object, why: str) -> ConfigError:
    """``--name-of-option VALUE: why`` (fields are named like the options that set them)."""
    if isinstance(value, float):
        shown = f"{value:g}"
    elif isinstance(value, str):
        shown = repr(value)
    else:
        shown = str(value)
    return ConfigError(f"--{name.replace('_', '-')} {shown}: {why}")


def _port(name: str, port: int) -> None:
    if not 1 <= port <= 0xFFFF:
        raise _bad(name, port, "expected 1..65535")


def _non_negative(name: str, value: float) -> None:
    if not 0 <= value < math.inf:
        raise _bad(name, value, "must be a number >= 0 (seconds; 0 = off)")


def _heartbeat_interval(value: float) -> None:
    _non_negative("heartbeat_interval", value)
    if value and not MIN_INTERVAL_MS <= round(value * 1000) <= MAX_INTERVAL_MS:
        raise _bad("heartbeat_interval", value, "must be 0 (none) or 0.1..60 s")


def _name(name: str, value: str) -> None:
    if not value or len(value.encode()) > MAX_NAME_BYTES:
        raise _bad(name, value, f"must be 1 to {MAX_NAME_BYTES} UTF-8 bytes")


def _ipv4(name: str, value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise _bad(name, value, "expected an IPv4 address like 192.168.1.20") from None


# ----------------------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """How a sender answers discovery queries and announces itself.

    Attributes:
        port: the discovery UDP port.
        announce_interval: seconds between broadcast announces; 0 only answers queries.
        answer_rate: answers per second the token bucket refills (> 0).
        answer_burst: answers the bucket holds (>= 1).

    Raises:
        ConfigError: a value out of range.
    """

    port: int = DEFAULT_DISCOVERY_PORT
    announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL
    answer_rate: float = DEFAULT_ANSWER_RATE
    answer_burst: int = DEFAULT_ANSWER_BURST

    def __post_init__(self) -> None:
        _port("discovery_port", self.port)
        _non_negative("announce_interval", self.announce_interval)
        if not 0 < self.answer_rate < math.inf:
            raise _bad("answer_rate", self.answer_rate, "must be above 0 answers/s")
        if self.answer_burst < 1:
            raise _bad("answer_burst", self.answer_burst, "must be at least 1")


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """What one ``mcastcam-discover`` run asks the LAN.

    Attributes:
        interface: the interface to ask on (``None``: the default route's).
        port: the senders' discovery UDP port.
        timeout: seconds to listen for answers (> 0).
        name: only the sender with this stream name (``None``: all).
        json: print a JSON array instead of lines.
        debug, quiet: logging levels.
        key_file: a key file (docs/security.md): tagged queries, tagged answers only.

    Raises:
        ConfigError: a value out of range.
    """

    interface: str | None = None
    port: int = DEFAULT_DISCOVERY_PORT
    timeout: float = DEFAULT_DISCOVERY_TIMEOUT
    name: str | None = None
    json: bool = False
    debug: bool = False
    quiet: bool = False
    key_file: str | None = None

    def __post_init__(self) -> None:
        _port("port", self.port)
        if not 0 < self.timeout < math.inf:
            raise _bad("timeout", self.timeout, "must be above 0 seconds")
        if self.name is not None:
            _name("name", self.name)


# ----------------------------------------------------------------------------- sender


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """What the sender's core (:class:`~mcastcam.protocol.sender.SenderSession`) needs.

    Attributes:
        stream_id: random u32 for this run (like an RTP SSRC), chosen by the shell.
        name: the stream's name (host name by default), 1 to 64 UTF-8 bytes.
        host: the sender's IPv4 address on its interface.
        run_nonce: random non-zero u32 of this run (§8.2), chosen by the shell.
        symbol_size: T, bytes, a multiple of 8 in 64..65000 (from the MTU; 1424 for 1500).
        fec: ``--fec``: ``auto`` (redundancy from receiver reports), ``off`` or a percent.
        nack_delay: seconds receivers wait before a NACK (heartbeat ``nack_delay_ms``).
        nack_rate: NACKs per second accepted per receiver, 0 = NACK repair off.
        repair_window: seconds after a frame's first datagram its NACKs are answered.
        repair_frames: most frames held for NACK repair.
        max_rate: cap in bits per second, or ``None``.
        spread: a frame's fragments are spread over this fraction of the frame interval
            (0 sends each frame as one burst, limited only by ``max_rate``), 0..1.
        fps: the source's nominal frame rate (frames/s), for the spread and heartbeats.
        width, height: frame size in pixels, for heartbeats (0 if unknown).
        heartbeat_interval: seconds between heartbeats (0 disables them).
        wall_offset_ns: wall clock minus monotonic clock, ns, to put wall times on the wire.

    Raises:
        ConfigError: a value out of range.
    """

    stream_id: int
    name: str
    host: str = "0.0.0.0"
    run_nonce: int = 1
    symbol_size: int = DEFAULT_SYMBOL_SIZE
    fec: FecMode = field(default_factory=FecMode)
    nack_delay: float = DEFAULT_NACK_DELAY
    nack_rate: float = DEFAULT_NACK_RATE
    repair_window: float = DEFAULT_REPAIR_WINDOW
    repair_frames: int = DEFAULT_REPAIR_FRAMES
    max_rate: float | None = None
    spread: float = DEFAULT_SPREAD
    fps: float = DEFAULT_FPS
    width: int = 0
    height: int = 0
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    wall_offset_ns: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.stream_id <= 0xFFFFFFFF:
            raise _bad("stream_id", self.stream_id, "must be a u32")
        _name("name", self.name)
        _ipv4("host", self.host)
        if not 1 <= self.run_nonce <= 0xFFFFFFFF:
            raise _bad("run_nonce", self.run_nonce, "must be a non-zero u32")
        t = self.symbol_size
        if not MIN_SYMBOL_SIZE <= t <= MAX_SYMBOL_SIZE or t % SYMBOL_ALIGNMENT:
            raise _bad(
                "symbol_size",
                t,
                f"must be a multiple of {SYMBOL_ALIGNMENT} in "
                f"{MIN_SYMBOL_SIZE}..{MAX_SYMBOL_SIZE} bytes",
            )
        if not 0.001 <= self.nack_delay <= MAX_NACK_DELAY_MS / 1000:
            raise _bad("nack_delay", self.nack_delay, "must be 0.001..1 s")
        if not 0 <= self.nack_rate <= MAX_NACK_RATE_MILLI / 1000:
            raise _bad("nack_rate", self.nack_rate, "must be 0..10 NACKs/s")
        if not 0 < self.repair_window <= MAX_REPAIR_WINDOW_MS / 1000:
            raise _bad("repair_window", self.repair_window, "must be above 0 and at most 5 s")
        if self.repair_frames < 1:
            raise _bad("repair_frames", self.repair_frames, "must be at least 1")
        if self.max_rate is not None and not 0 < self.max_rate < math.inf:
            raise _bad("max_rate", self.max_rate, "must be above 0 bits/s")
        if not 0 <= self.spread <= 1:
            raise _bad("spread", self.spread, "must be from 0 to 1")
        if not 0 <= self.fps < math.inf:
            raise _bad("fps", self.fps, "must be a number >= 0 (0 = unknown)")
        if self.width < 0 or self.height < 0:
            raise _bad("size", f"{self.width}x{self.height}", "must not be negative")
        _heartbeat_interval(self.heartbeat_interval)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Which frames a sender sends (``--source`` and its options).

    Attributes:
        spec: ``None`` (first camera, else the sample), ``"sample"``, ``"testpattern"``, a
            device, a ``.mjpeg`` file or a folder of JPEGs.
        size: ``(width, height)`` pixels, or ``None`` (the source's own).
        fps: frames per second, or ``None`` (the source's own, 30 for files).
        loop: play a file or folder again and again.
        fmt: V4L2 pixel format (``"MJPEG"``/``"YUYV"``) or ``None``.
        quality: JPEG quality 1..100 of frames mcastcam encodes.
        subsampling: ``"422"`` or ``"420"``.
        controls: V4L2 controls by kernel name.
        count: stop after this many frames (``None``: run on).

    Raises:
        ConfigError: ``count`` below 1 (the source checks the rest when it opens).
    """

    spec: str | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None
    loop: bool = False
    fmt: str | None = None
    quality: int = DEFAULT_QUALITY
    subsampling: str = DEFAULT_SUBSAMPLING
    controls: Mapping[str, str] = field(default_factory=dict)
    count: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.count <= 0:
            raise _bad("count", self.count, "must be at least 1")


@dataclass(frozen=True, slots=True)
class SenderRunConfig:
    """Everything one ``mcastcam-send`` run was asked to do (built from its options).

    Exactly one of ``group``, ``broadcast_port`` or ``unicast`` says where datagrams go.

    Attributes:
        source: see :class:`SourceConfig`.
        name: the stream name (1..64 UTF-8 bytes).
        group: multicast ``(group, port)`` or ``None``.
        broadcast_port: UDP port of subnet broadcasts, or ``None``.
        unicast: receivers to send to directly.
        interface: interface name, or ``None`` (the default route's).
        ttl: multicast TTL 0..255.
        multicast_loop: deliver our own multicast to this host.
        mtu: path MTU in bytes, or ``None`` (the interface's).
        fec: ``--fec auto|off|PCT`` (see :class:`~mcastcam.protocol.repair.FecMode`).
        sndbuf: ``SO_SNDBUF`` bytes, or ``None``.
        gso: batch datagrams with UDP GSO where the kernel allows it (``--no-gso``: never).
        max_rate: bits per second, or ``None``.
        spread: 0..1, see :class:`SenderConfig`.
        heartbeat_interval: seconds (0 = none).
        discovery: see :class:`DiscoveryConfig`.
        status_json: path of the status file, or ``None``.
        metrics: ``(address, TCP port)`` serving Prometheus ``/metrics``, or ``None``.
        list_devices: list cameras and exit.
        debug, quiet: logging level.

    Raises:
        ConfigError: a value out of range, or two destinations at once.
    """

    source: SourceConfig = field(default_factory=SourceConfig)
    name: str = "mcastcam"
    group: Address | None = None
    broadcast_port: int | None = None
    unicast: tuple[Address, ...] = ()
    interface: str | None = None
    ttl: int = DEFAULT_TTL
    multicast_loop: bool = True
    mtu: int | None = None
    fec: FecMode = field(default_factory=FecMode)
    sndbuf: int | None = None
    gso: bool = True
    max_rate: float | None = None
    spread: float = DEFAULT_SPREAD
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    status_json: str | None = None
    metrics: Address | None = None
    list_devices: bool = False
    key_file: str | None = None
    encrypt: bool = False
    aead: str = "aes-128-gcm"
    debug: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        _name("name", self.name)
        if sum([self.group is not None, self.broadcast_port is not None, bool(self.unicast)]) > 1:
            raise ConfigError("--group, --broadcast and --unicast exclude each other: pick one")
        if self.group is not None:
            _port("port", self.group[1])
        if self.broadcast_port is not None:
            _port("port", self.broadcast_port)
        for host, port in self.unicast:
            if not host:
                raise ConfigError("--unicast needs a host, e.g. 10.8.0.2:8989")
            _port("unicast", port)
        if not 0 <= self.ttl <= 255:
            raise _bad("ttl", self.ttl, "must be 0..255 (1 = this LAN only)")
        if self.mtu is not None:
            try:
                symbol_size_for_mtu(self.mtu)
            except LocalProtocolError as exc:
                raise _bad("mtu", self.mtu, str(exc)) from None
        if self.max_rate is not None and not 0 < self.max_rate < math.inf:
            raise _bad("max_rate", self.max_rate, "must be above 0 bits/s")
        if not 0 <= self.spread <= 1:
            raise _bad("spread", self.spread, "must be from 0 to 1")
        _heartbeat_interval(self.heartbeat_interval)


# ----------------------------------------------------------------------------- receiver

DEFAULT_HTTP_PORT = 8080
"""The receiver's HTTP port when neither ``--http`` nor ``--tcp`` is given."""
DEFAULT_RCVBUF = 4 << 20
"""The receiver's ``SO_RCVBUF`` request, bytes (the kernel caps it at ``net.core.rmem_max``)."""
DEFAULT_MAX_CLIENTS = 1000
"""Stream clients (HTTP and TCP together) a receiver serves at once."""
DEFAULT_FRAME_TIMEOUT = 1.0
"""Seconds an incomplete frame may wait for its fragments."""
DEFAULT_MAX_FRAME_SIZE = 16 << 20
"""Largest frame a receiver accepts, bytes (larger ones are refused before allocation)."""


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """Everything one ``mcastcam-recv`` run was asked to do (built from its options).

    At most one of ``group``, ``broadcast`` or ``unicast_port`` says what to receive; none
    means "find a sender by discovery".

    Attributes:
        group: multicast ``(group, port)`` to join, or ``None``.
        broadcast: receive subnet broadcasts instead of a group.
        broadcast_port: UDP port with ``broadcast`` (``None``: :data:`DEFAULT_PORT`).
        unicast_port: receive datagrams sent straight to this host on this UDP port.
        interface: interface name, or ``None`` (the default route's).
        rcvbuf: ``SO_RCVBUF`` bytes (> 0).
        gro: ask for UDP GRO on the receiving socket (``--no-gro``: never).
        stream: follow this stream name or id (``0x1234abcd``), or ``None`` (the first).
        name: follow the sender named so (and ask discovery only for it), or ``None``.
        frame_timeout: seconds an incomplete frame waits (> 0).
        max_frame_size: largest frame accepted, bytes (> 0).
        discovery_port: the senders' discovery UDP port.
        discovery_timeout: seconds to wait for discovery answers (> 0).
        receiver_name: this receiver's name in its reports (1..64 UTF-8 bytes).
        reports: send receiver reports (loss, RTT) to the sender.
        nack: send NACKs for frames FEC could not finish (needs ``reports``).
        liveness_timeout: seconds of silence before a sender is lost (> 0), or ``None``
            (3 heartbeat intervals).
        http: ``(host, port)`` to serve HTTP on, or ``None``.
        tcp: ``(host, port)`` to serve raw TCP frames on, or ``None``.
        max_clients: stream clients at once, HTTP and TCP together (>= 1).
        auth: ``(user, password)`` for HTTP Basic authentication, or ``None``.
        cors: the ``Access-Control-Allow-Origin`` value, or ``None``.
        tls_cert, tls_key: PEM certificate and key files to serve HTTPS, or ``None``.
        max_frame_age: seconds the newest frame may be old before ``/snapshot`` answers 503
            (> 0), or ``None`` (automatic: a few frame intervals).
        publish: ``rtmp://HOST/APP/NAME`` to push the frames to with ffmpeg, or ``None``.
        record: directory to record ``.mjpeg`` segments into, or ``None``.
        record_limits: segment length and size, retention and free-space floor of ``record``.
        no_signal: serve a "no signal" JPEG on ``/stream`` and ``/snapshot`` while no fresh
            frame is there (``--no-signal-frame off``: never).
        debug, quiet: logging level.

    Raises:
        ConfigError: a value out of range, or two things to receive at once.
    """

    group: Address | None = None
    broadcast: bool = False
    broadcast_port: int | None = None
    unicast_port: int | None = None
    interface: str | None = None
    rcvbuf: int = DEFAULT_RCVBUF
    gro: bool = True
    stream: str | None = None
    name: str | None = None
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    discovery_port: int = DEFAULT_DISCOVERY_PORT
    discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT
    receiver_name: str = "mcastcam"
    reports: bool = True
    nack: bool = True
    liveness_timeout: float | None = None
    http: Address | None = None
    tcp: Address | None = None
    max_clients: int = DEFAULT_MAX_CLIENTS
    auth: tuple[str, str] | None = field(default=None, repr=False)  # keep passwords out of logs
    cors: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_frame_age: float | None = None
    publish: str | None = field(default=None, repr=False)  # its URL may hold a password
    record: str | None = None
    record_limits: RecordLimits = field(default_factory=RecordLimits)
    no_signal: bool = True
    key_file: str | None = None
    debug: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if sum([self.group is not None, self.broadcast, self.unicast_port is not None]) > 1:
            raise ConfigError(
                "--group, --broadcast and --unicast-port exclude each other: pick one"
            )
        if self.broadcast_port is not None and not self.broadcast:
            raise ConfigError("--port goes with --broadcast (a group carries its port: ADDR:PORT)")
        for name, port in (("port", self.broadcast_port), ("unicast_port", self.unicast_port)):
            if port is not None:
                _port(name, port)
        if self.group is not None:
            _port("group", self.group[1])
        if self.max_clients < 1:
            raise _bad("max_clients", self.max_clients, "must be at least 1")
        if self.rcvbuf <= 0:
            raise _bad("rcvbuf", self.rcvbuf, "must be a positive number of bytes")
        if self.max_frame_size <= 0:
            raise _bad("max_frame_size", self.max_frame_size, "must be positive")
        if self.stream is not None and self.name is not None:
            raise ConfigError("--stream and --name both pick a stream: give one")
        _port("discovery_port", self.discovery_port)
        for key, seconds in (
            ("frame_timeout", self.frame_timeout),
            ("discovery_timeout", self.discovery_timeout),
            ("liveness_timeout", self.liveness_timeout),
            ("max_frame_age", self.max_frame_age),
        ):
            if seconds is not None and not 0 < seconds < math.inf:
                raise _bad(key, seconds, "must be above 0 seconds")
        _name("receiver_name", self.receiver_name)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both")
        if self.tls_cert is not None and self.http is None:
            raise ConfigError("--tls-cert/--tls-key secure the HTTP server: give --http too")
        for key, where in (("http", self.http), ("tcp", self.tcp)):
            if where is not None:
                _port(key, where[1])
