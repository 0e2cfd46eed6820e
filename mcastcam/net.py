"""Network shell: interfaces, UDP multicast/broadcast/unicast sockets, buffer sizing.

This is one of the I/O modules (docs/architecture.md): it opens and configures sockets and
nothing in the sans-IO core imports it. Every ``OSError`` raised while setting a socket up becomes a
:class:`~mcastcam.errors.NetworkSetupError` that keeps the ``errno`` and says what to do;
every bad user value becomes a :class:`~mcastcam.errors.ConfigError`.

Sources: ip(7) (``IP_ADD_MEMBERSHIP`` with ``struct ip_mreqn``, ``IP_MULTICAST_IF``,
``IP_MULTICAST_TTL``, ``IP_MULTICAST_LOOP``, ``IP_MULTICAST_ALL``), socket(7) (``SO_RCVBUF``,
``SO_SNDBUF``, ``SO_REUSEPORT``, ``SO_BINDTODEVICE``, ``SO_BROADCAST``), RFC 1112 and RFC 5771
(IPv4 multicast addresses), RFC 2365 (administratively scoped 239.0.0.0/8), RFC 1112 §6.4 (the
23-bit IP-to-Ethernet multicast MAC mapping, hence group aliasing).
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import logging
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import netifaces

from mcastcam.errors import ConfigError, NetworkSetupError
from mcastcam.protocol.ratelimit import RateLimitedLog

__all__ = [
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "SEND_STATS",
    "SOL_UDP",
    "UDP_GRO",
    "UDP_SEGMENT",
    "BytesLike",
    "Interface",
    "Offload",
    "SendStats",
    "check_group",
    "directed_broadcast",
    "enable_gro",
    "gro_segment_size",
    "open_broadcast_receiver",
    "open_broadcast_sender",
    "open_multicast_receiver",
    "open_multicast_sender",
    "open_unicast_receiver",
    "open_unicast_sender",
    "parse_host_port",
    "probe_gso",
    "reported_broadcast",
    "resolve_interface",
    "send_datagrams",
    "send_fragments",
    "set_buffer",
    "setup_error",
]

log = logging.getLogger(__name__)

#: What ``sendmsg`` takes as one buffer.
BytesLike = bytes | bytearray | memoryview

#: Linux ``IP_MULTICAST_ALL`` (ip(7), <linux/in.h>); missing from Python's socket module.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
#: ``SOL_UDP`` and the UDP offload options of udp(7) (<linux/udp.h>); Python 3.11 lacks the
#: last two: ``UDP_SEGMENT`` (GSO, Linux >= 4.18) and ``UDP_GRO`` (GRO, Linux >= 5.0).
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)

_LINK_LOCAL_BLOCK = ipaddress.IPv4Network("224.0.0.0/24")
_MULTICAST_BLOCK = ipaddress.IPv4Network("224.0.0.0/4")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

# errno -> what to do about it (see mcastcam.errors).
_HINTS: dict[int, str] = {
    errno_mod.ENODEV: "no such interface: check the name with `ip -br link`",
    errno_mod.EADDRNOTAVAIL: (
        "address not available: the interface has no IPv4 address, or the address is not "
        "local to this host (check `ip -br addr`)"
    ),
    errno_mod.ENOBUFS: (
        "too many multicast memberships or no buffer space: raise "
        "`sysctl -w net.ipv4.igmp_max_memberships=1024`"
    ),
    errno_mod.EADDRINUSE: (
        "address already in use: another program holds this port without SO_REUSEPORT "
        "(find it with `ss -ulpn`)"
    ),
    errno_mod.EACCES: (
        "permission denied: broadcast needs SO_BROADCAST, ports below 1024 need root or "
        "CAP_NET_BIND_SERVICE, and a firewall may refuse the traffic"
    ),
    errno_mod.EPERM: (
        "operation not permitted: SO_BINDTODEVICE and ports below 1024 need privileges, "
        "or a firewall (nftables) refused the traffic"
    ),
    errno_mod.ENETUNREACH: (
        "network unreachable: no route to the destination; multicast needs a route "
        "(`ip route add 224.0.0.0/4 dev IFACE`) or an explicit interface (IP_MULTICAST_IF)"
    ),
    errno_mod.EINVAL: "invalid argument: check that the group is a multicast address",
}


def setup_error(err: OSError, action: str) -> NetworkSetupError:
    """Turn an ``OSError`` from socket setup into a :class:`NetworkSetupError` with a hint.

    ``action`` says what was being done (``"join 239.255.0.1 on lo"``). The result keeps
    ``err.errno``; its message is ``"<action>: <strerror> (<hint>)"``.
    """
    code = err.errno
    reason = err.strerror or str(err)
    hint = _HINTS.get(code) if code is not None else None
    message = f"{action}: {reason}" + (f" ({hint})" if hint else "")
    return NetworkSetupError(message, code)


# ---------------------------------------------------------------------------- interfaces


@dataclass(frozen=True, slots=True)
class Interface:
    """One IPv4 network interface.

    ``address``/``netmask``/``broadcast`` are dotted-quad strings (``broadcast`` is ``None``
    on interfaces without one, such as ``lo``); ``index`` is the kernel ifindex
    (``if_nametoindex``); ``mtu`` is in bytes, read from ``/sys/class/net/NAME/mtu``.
    """

    name: str
    index: int
    address: str
    netmask: str
    broadcast: str | None
    mtu: int


def _default_route_interface() -> str:
    """Name of the interface of the IPv4 default route (netifaces.gateways()), else ``lo``."""
    try:
        default = netifaces.gateways().get("default")
    except OSError:  # pragma: no cover - netlink unavailable
        return "lo"
    if isinstance(default, dict) and netifaces.AF_INET in default:
        return str(default[netifaces.AF_INET][1])
    return "lo"


#: ``IFF_BROADCAST`` of <linux/if.h>: the link can broadcast (``/sys/class/net/NAME/flags``).
IFF_BROADCAST = 0x2

_derived_logged: set[tuple[str, str]] = set()


def _read_flags(name: str) -> int:
    """The interface's ``IFF_*`` flags from sysfs (0 when they cannot be read)."""
    try:
        return int((Path("/sys/class/net") / name / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return 0


def reported_broadcast(name: str) -> str | None:
    """The broadcast address netifaces reports for ``name``'s first IPv4 address, as is.

    ``mcastcam doctor`` shows it (the host's own address when configured without ``brd``);
    sockets use :attr:`Interface.broadcast` (:func:`directed_broadcast`). ``None`` when there
    is none or no such interface.
    """
    try:
        inet = netifaces.ifaddresses(name).get(netifaces.AF_INET) or []
    except ValueError:
        return None
    first = next((a for a in inet if a.get("addr")), None)
    return str(first["broadcast"]) if first is not None and first.get("broadcast") else None


def directed_broadcast(name: str, address: str, netmask: str, reported: str | None) -> str | None:
    """The subnet-directed broadcast address to use on interface ``name``.

    ``reported`` is what netifaces says. An address configured without one (``ip addr add
    A/24 dev eth0``, no ``brd``) is reported with the host's own address as broadcast (or
    none); Linux still routes ``network | ~netmask`` as broadcast there (``ip route show
    table local``), so that address is derived from ``address`` and ``netmask`` and logged
    at INFO once per interface. Links without ``IFF_BROADCAST`` (``lo``, point-to-point)
    and /31, /32 networks have none: ``None``.
    """
    if reported and reported != address:
        return reported
    if not _read_flags(name) & IFF_BROADCAST:
        return None
    try:
        network = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
    except ValueError:
        return None
    if network.prefixlen >= 31:
        return None
    derived = str(network.broadcast_address)
    if (name, derived) not in _derived_logged:
        _derived_logged.add((name, derived))
        log.info(
            "%s: %s is configured without a broadcast address (netifaces reports %s): "
            "using the subnet's directed broadcast %s",
            name, f"{address}/{network.prefixlen}", reported or "none", derived,
        )  # fmt: skip
    return derived


def _read_mtu(name: str) -> int:
    path = Path("/sys/class/net") / name / "mtu"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the MTU of interface {name} from {path}: {err}") from err


def resolve_interface(name: str | None) -> Interface:
    """Look up an interface by name (``None``: the interface of the default route, else ``lo``).

    Uses netifaces (package netifaces-plus) for addresses, ``socket.if_nametoindex`` for the
    index and sysfs for the MTU. The first IPv4 address of the interface is used; its
    broadcast address comes from :func:`directed_broadcast` (derived from the netmask when
    the address was configured without one).

    Raises:
        ConfigError: ``"no such interface NAME (have: lo, eth0)"`` or
            ``"interface NAME has no IPv4 address"``.

    """
    if name is None:
        name = _default_route_interface()
    have = [str(n) for n in netifaces.interfaces()]
    if name not in have:
        raise ConfigError(f"no such interface {name} (have: {', '.join(have)})")
    inet = netifaces.ifaddresses(name).get(netifaces.AF_INET) or []
    first = next((a for a in inet if a.get("addr")), None)
    if first is None:
        raise ConfigError(f"interface {name} has no IPv4 address")
    try:
        index = socket.if_nametoindex(name)
    except OSError as err:  # the interface vanished between the two calls
        raise ConfigError(f"no such interface {name} (have: {', '.join(have)})") from err
    address = str(first["addr"])
    netmask = str(first.get("netmask", "255.255.255.255"))
    reported = str(first["broadcast"]) if first.get("broadcast") else None
    return Interface(
        name=name,
        index=index,
        address=address,
        netmask=netmask,
        broadcast=directed_broadcast(name, address, netmask, reported),
        mtu=_read_mtu(name),
    )


# ---------------------------------------------------------------------------- address checks


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``"HOST"``, ``"HOST:PORT"`` or ``":PORT"`` into ``(host, port)``.

    ``HOST`` is an IPv4 literal or a DNS name (not resolved here); an empty host (``":PORT"``)
    means all addresses (``""``). ``PORT`` is 1..65535; ``default_port`` is used when absent.

    Raises:
        ConfigError: empty text, an IPv6 literal, a bad host or a port out of range, with the
            bad value in the message.

    """
    raw = text.strip()
    if not raw:
        raise ConfigError("empty address: expected HOST[:PORT], e.g. 239.255.10.1:5004")
    if raw.count(":") > 1 or raw.startswith("["):
        raise ConfigError(f"bad address {text!r}: only IPv4 HOST[:PORT] is supported")
    host, sep, port_text = raw.partition(":")
    if sep:
        if not port_text.isdigit():
            raise ConfigError(f"bad port {port_text!r} in {text!r}: expected 1..65535")
        port = int(port_text)
    else:
        port = default_port
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad port {port} in {text!r}: expected 1..65535")
    if host:
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError as err:
                raise ConfigError(f"bad IPv4 address {host!r} in {text!r}") from err
        elif not _HOSTNAME_RE.match(host):
            raise ConfigError(f"bad host name {host!r} in {text!r}")
    return host, port


def check_group(addr: str) -> list[str]:
    """Validate an IPv4 multicast group; return warnings (possibly none).

    Raises:
        ConfigError: ``addr`` is not an IPv4 address, not multicast (224.0.0.0/4, RFC 5771),
            or in 224.0.0.0/24 (the Local Network Control Block: routers and IGMP own it).

    Warns (returned strings): groups whose low 23 bits equal those of 224.0.0.x or 224.0.1.x
    (``X.0.0.Y``, ``X.0.1.Y``, ``X.128.0.Y``, ``X.128.1.Y``, e.g. 239.0.0.1) share an Ethernet
    MAC address with control traffic (RFC 1112 §6.4), so IGMP-snooping switches flood them to
    every port.

    """
    try:
        ip = ipaddress.IPv4Address(addr)
    except ValueError as err:
        raise ConfigError(f"bad group {addr!r}: not an IPv4 address") from err
    if ip not in _MULTICAST_BLOCK:
        raise ConfigError(
            f"bad group {addr}: not a multicast address (need 224.0.0.0/4, e.g. 239.255.10.1)"
        )
    if ip in _LINK_LOCAL_BLOCK:
        raise ConfigError(
            f"bad group {addr}: 224.0.0.0/24 is the link-local control block "
            "(routing and IGMP); use 239.255.x.y"
        )
    warnings: list[str] = []
    low23 = int(ip) & 0x7FFFFF
    if low23 >> 8 in (0, 1):
        warnings.append(
            f"group {addr} maps to the same Ethernet MAC as 224.0.{low23 >> 8}.x control "
            "traffic, so switches with IGMP snooping flood it to every port; "
            "prefer 239.255.x.y (x > 1)"
        )
    return warnings


# ---------------------------------------------------------------------------- buffers


def set_buffer(sock: socket.socket, which: Literal["rcv", "snd"], size: int) -> str | None:
    """Set ``SO_RCVBUF`` (``which="rcv"``) or ``SO_SNDBUF`` (``"snd"``) to ``size`` bytes.

    Linux doubles the value for bookkeeping and clamps it to ``net.core.rmem_max`` /
    ``net.core.wmem_max`` (socket(7)), so ``getsockopt`` returns ``2 * min(size, max)``.

    Returns:
        ``None`` when the kernel granted ``size``; otherwise a warning naming the sysctl to
        raise (``sysctl -w net.core.rmem_max=N``).

    Raises:
        ConfigError: ``size`` is not positive.
        NetworkSetupError: ``setsockopt`` failed.

    """
    if size <= 0:
        raise ConfigError(f"bad buffer size {size}: must be a positive number of bytes")
    option = socket.SO_RCVBUF if which == "rcv" else socket.SO_SNDBUF
    sysctl = "net.core.rmem_max" if which == "rcv" else "net.core.wmem_max"
    name = "SO_RCVBUF" if which == "rcv" else "SO_SNDBUF"
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
        granted = sock.getsockopt(socket.SOL_SOCKET, option)
    except OSError as err:
        raise setup_error(err, f"set {name} to {size} bytes") from err
    if granted < 2 * size:
        return (
            f"{name}: asked for {size} bytes, the kernel granted {granted // 2} "
            f"(capped by {sysctl}); raise it with `sysctl -w {sysctl}={size}`"
        )
    return None


def _apply_buffer(sock: socket.socket, which: Literal["rcv", "snd"], size: int | None) -> None:
    if size is None:
        return
    warning = set_buffer(sock, which, size)
    if warning:
        log.warning("%s", warning)


# ---------------------------------------------------------------------------- helpers


def _udp_socket(action: str) -> socket.socket:
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except OSError as err:
        raise setup_error(err, action) from err


def _mreqn(group: str, iface: Interface) -> bytes:
    """``struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}`` (ip(7)), 12 bytes."""
    return struct.pack(
        "4s4si", socket.inet_aton(group), socket.inet_aton(iface.address), iface.index
    )


def _bind_to_device(sock: socket.socket, iface: Interface) -> bool:
    """Try ``SO_BINDTODEVICE``; return ``False`` when not permitted (needs CAP_NET_RAW)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.name.encode())
    except PermissionError:
        return False
    except OSError as err:
        raise setup_error(err, f"bind socket to device {iface.name}") from err
    return True


def _check_ttl(ttl: int) -> None:
    if not 0 <= ttl <= 255:
        raise ConfigError(f"bad TTL {ttl}: must be 0..255 (1 = this LAN only)")


# ---------------------------------------------------------------------------- senders


def open_multicast_sender(
    iface: Interface, ttl: int, loop: bool, sndbuf: int | None = None
) -> socket.socket:
    """Open a non-blocking UDP socket that sends multicast out of ``iface``.

    Sets ``IP_MULTICAST_IF`` (``struct ip_mreqn`` with the interface index and address),
    ``IP_MULTICAST_TTL`` (``ttl`` hops: 0 = this host only, 1 = this LAN), ``IP_MULTICAST_LOOP``
    (``loop``: local receivers on this host get a copy), optional ``SO_SNDBUF`` (``sndbuf``
    bytes; a kernel clamp is logged), and binds to ``(iface.address, 0)`` so the source
    address is on that interface. The caller closes the socket.

    Raises:
        ConfigError: ``ttl`` outside 0..255.
        NetworkSetupError: any socket option or the bind failed (``errno`` kept, with a hint).

    """
    _check_ttl(ttl)
    sock = _udp_socket(f"open multicast sender on {iface.name}")
    try:
        step = f"set IP_MULTICAST_IF {iface.name} ({iface.address})"
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn("0.0.0.0", iface))
            step = f"set IP_MULTICAST_TTL {ttl}"
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            step = f"set IP_MULTICAST_LOOP {int(loop)}"
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
            step = f"bind multicast sender to {iface.address}:0"
            sock.bind((iface.address, 0))
        except OSError as err:
            raise setup_error(err, step) from err
        _apply_buffer(sock, "snd", sndbuf)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_broadcast_sender(iface: Interface, sndbuf: int | None = None) -> socket.socket:
    """Open a non-blocking UDP socket that sends to ``iface.broadcast`` (subnet broadcast).

    Sets ``SO_BROADCAST``; pins the socket to the interface with ``SO_BINDTODEVICE`` when
    permitted (CAP_NET_RAW) and always binds to ``(iface.address, 0)`` so the source address
    and the route are on that interface. Send to ``(iface.broadcast, port)``.

    Raises:
        ConfigError: the interface has no broadcast address (``lo``, point-to-point links).
        NetworkSetupError: any socket option or the bind failed.

    """
    if iface.broadcast is None:
        raise ConfigError(
            f"interface {iface.name} has no broadcast address (loopback or point-to-point); "
            "use multicast or a LAN interface"
        )
    sock = _udp_socket(f"open broadcast sender on {iface.name}")
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        except OSError as err:
            raise setup_error(err, "set SO_BROADCAST") from err
        _bind_to_device(sock, iface)
        try:
            sock.bind((iface.address, 0))
        except OSError as err:
            raise setup_error(err, f"bind broadcast sender to {iface.address}:0") from err
        _apply_buffer(sock, "snd", sndbuf)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_unicast_sender(sndbuf: int | None = None) -> socket.socket:
    """Open a non-blocking, unbound UDP socket for unicast ``sendmsg`` to any address.

    Raises:
        NetworkSetupError: the socket or ``SO_SNDBUF`` could not be set up.

    """
    sock = _udp_socket("open unicast sender")
    try:
        _apply_buffer(sock, "snd", sndbuf)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------- receivers


def open_multicast_receiver(
    group: str, port: int, iface: Interface, rcvbuf: int | None = None
) -> socket.socket:
    """Open a non-blocking UDP socket that receives ``group:port`` on ``iface``.

    ``SO_REUSEADDR`` + ``SO_REUSEPORT`` (several receivers on one host each get a copy),
    ``IP_MULTICAST_ALL`` = 0 (only groups this socket joined), bind to ``(group, port)`` so
    datagrams for other groups on the same port are not delivered, then ``IP_ADD_MEMBERSHIP``
    with ``struct ip_mreqn`` (group, interface address, interface index; ip(7)), which makes
    the kernel send an IGMP report. ``port`` 0 lets the OS pick (read it back with
    ``getsockname()``). Optional ``rcvbuf`` bytes for ``SO_RCVBUF`` (a clamp is logged).

    Raises:
        ConfigError: ``group`` is not a usable multicast group (see :func:`check_group`) or
            ``port`` is outside 0..65535. Aliasing warnings are logged.
        NetworkSetupError: bind or join failed (ENOBUFS: too many memberships, ENODEV, ...).

    """
    for warning in check_group(group):
        log.warning("%s", warning)
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad port {port}: expected 0..65535")
    sock = _udp_socket(f"open multicast receiver {group}:{port}")
    try:
        step = "set SO_REUSEADDR/SO_REUSEPORT"
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            step = "set IP_MULTICAST_ALL 0"
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        except OSError as err:
            raise setup_error(err, step) from err
        _apply_buffer(sock, "rcv", rcvbuf)
        try:
            sock.bind((group, port))
        except OSError as err:
            raise setup_error(err, f"bind multicast receiver to {group}:{port}") from err
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, iface))
        except OSError as err:
            raise setup_error(err, f"join group {group} on {iface.name} ({iface.address})") from err
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_broadcast_receiver(
    port: int, iface: Interface, rcvbuf: int | None = None
) -> socket.socket:
    """Open a non-blocking UDP socket that receives subnet broadcasts on ``iface``.

    Choice: bind to ``(iface.broadcast, port)`` rather than ``("", port)``. Linux delivers
    datagrams sent to that subnet-directed broadcast address to such a socket; unicast
    datagrams and other subnets' broadcasts to the same port are not delivered, and no
    privilege is needed. ``SO_BINDTODEVICE`` is added when permitted (CAP_NET_RAW) so a
    second interface on an overlapping subnet cannot leak in. ``SO_REUSEADDR`` +
    ``SO_REUSEPORT`` let several receivers share the port.

    Raises:
        ConfigError: the interface has no broadcast address, or ``port`` is out of range.
        NetworkSetupError: bind failed.

    """
    if iface.broadcast is None:
        raise ConfigError(
            f"interface {iface.name} has no broadcast address (loopback or point-to-point); "
            "use multicast or a LAN interface"
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad port {port}: expected 0..65535")
    sock = _udp_socket(f"open broadcast receiver on {iface.name}")
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError as err:
            raise setup_error(err, "set SO_REUSEADDR/SO_REUSEPORT") from err
        _bind_to_device(sock, iface)
        _apply_buffer(sock, "rcv", rcvbuf)
        try:
            sock.bind((iface.broadcast, port))
        except OSError as err:
            raise setup_error(err, f"bind broadcast receiver to {iface.broadcast}:{port}") from err
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_unicast_receiver(host: str, port: int, rcvbuf: int | None = None) -> socket.socket:
    """Open a non-blocking UDP socket bound to ``(host, port)`` (``host`` ``""`` = all).

    Raises:
        ConfigError: ``port`` is outside 0..65535.
        NetworkSetupError: bind failed (EADDRINUSE, EADDRNOTAVAIL: ``host`` not local, ...).

    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad port {port}: expected 0..65535")
    sock = _udp_socket(f"open unicast receiver {host}:{port}")
    try:
        _apply_buffer(sock, "rcv", rcvbuf)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise setup_error(err, f"bind unicast receiver to {host or '*'}:{port}") from err
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------- sending


_TRANSIENT = frozenset({errno_mod.EAGAIN, errno_mod.EWOULDBLOCK, errno_mod.ENOBUFS})


@dataclass
class SendStats:
    """Counters kept by :func:`send_fragments`.

    ``sent``: datagrams handed to the kernel; ``gso_sent``: those of them sent in a
    ``UDP_SEGMENT`` batch; ``gso_calls``: such batches (``sendmsg`` calls; see
    :func:`send_datagrams`); ``blocked``: calls that stopped on EAGAIN/ENOBUFS (the caller
    retries); ``errors``: datagrams dropped, by ``errno``; ``log_interval``: seconds between
    two log lines for the same destination and error.
    """

    sent: int = 0
    gso_sent: int = 0
    gso_calls: int = 0
    blocked: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    log_interval: float = 60.0
    _log: RateLimitedLog | None = field(default=None, repr=False)

    def record_error(self, err: OSError, dest: tuple[str, int], datagrams: int = 1) -> None:
        """Count ``datagrams`` dropped; log at most once per ``log_interval`` per error."""
        code = err.errno if err.errno is not None else -1
        self.errors[code] += datagrams
        if self._log is None:
            self._log = RateLimitedLog(
                log,
                self.log_interval,
                template="sending to %(reason)s (%(since)d datagram(s) dropped, %(total)d in all)",
            )
        hint = f"; {_HINTS[code]}" if code in _HINTS else ""
        reason = f"{dest[0]}:{dest[1]} failed: {err.strerror or err}{hint}"
        self._log.count(reason, time.monotonic(), datagrams)


#: Process-wide counters used when :func:`send_fragments` gets no ``stats``.
SEND_STATS = SendStats()


def send_fragments(
    sock: socket.socket,
    dest: tuple[str, int],
    datagrams: Iterable[Sequence[BytesLike]],
    stats: SendStats | None = None,
) -> int:
    """Send each ``(header, payload)`` pair as one datagram with ``sendmsg`` (no join).

    A datagram may be any sequence of buffers (``(header, payload, tag)``): one iovec each.

    ``dest`` is ``(address, port)``. Stops at the first EAGAIN/EWOULDBLOCK/ENOBUFS (the
    socket buffer or the device queue is full): that datagram was *not* consumed and the
    caller retries it later, e.g. when the socket is writable. Any other ``OSError``
    (ENETUNREACH while a cable is out, EPERM from a firewall, EMSGSIZE, ...) drops that one
    datagram, is counted in ``stats.errors[errno]`` and logged at most once per minute per
    errno, and sending continues: a LAN hiccup must not kill the sender.

    Returns:
        How many datagrams were consumed (sent or dropped on error) from the start of
        ``datagrams``; the caller resumes at that index.

    """
    st = SEND_STATS if stats is None else stats
    consumed = 0
    for datagram in datagrams:
        try:
            sock.sendmsg(datagram, [], 0, dest)
        except OSError as err:
            if err.errno in _TRANSIENT:
                st.blocked += 1
                return consumed
            st.record_error(err, dest)
        else:
            st.sent += 1
        consumed += 1
    return consumed


# ---------------------------------------------------------------------------- UDP GSO / GRO

#: udp(7): "at most 64 datagrams are sent in a single call" with ``UDP_SEGMENT``.
GSO_MAX_SEGMENTS = 64
#: The whole ``UDP_SEGMENT`` buffer is one IPv4 datagram before segmentation, bytes.
GSO_MAX_BYTES = 65507
#: errnos of a ``UDP_SEGMENT`` send that mean "GSO does not work here", not "this datagram
#: failed": segment + headers over the route MTU or a socket with ``SO_NO_CHECK`` (EINVAL), an
#: egress device without checksum offload, xfrm, UDP-Lite (EIO), no UDP_SEGMENT (ENOPROTOOPT),
#: a protocol without GSO (EOPNOTSUPP), a buffer the path refuses whole (EMSGSIZE).
_GSO_FALLBACK = frozenset(
    {
        errno_mod.EINVAL,
        errno_mod.EIO,
        errno_mod.ENOPROTOOPT,
        errno_mod.EOPNOTSUPP,
        errno_mod.EMSGSIZE,
    }
)
_SEGMENT = struct.Struct("=H")  # UDP_SEGMENT's cmsg: the segment size, u16
_GRO_SIZE = struct.Struct("=i")  # UDP_GRO's cmsg: the segment size, int


@dataclass
class Offload:
    """Whether a socket uses a kernel offload (UDP GSO on a sender, UDP GRO on a receiver).

    ``name`` is ``"gso"`` or ``"gro"``; ``reason`` says why it is off (``"--no-gso"``,
    ``"UDP_SEGMENT refused: Protocol not available"``) or, while on, what is still unproven
    (``"not yet used"``: no batch was sent yet). :meth:`describe` gives ``"on"``,
    ``"on (reason)"`` or ``"off (reason)"`` for the log and ``/status``.
    """

    name: str
    enabled: bool
    reason: str = ""

    def describe(self) -> str:
        """``"on"``, ``"on (reason)"`` or ``"off (reason)"``."""
        state = "on" if self.enabled else "off"
        return f"{state} ({self.reason})" if self.reason else state

    def disable(self, reason: str) -> None:
        """Turn the offload off for good, saying why (logged at WARNING)."""
        self.enabled = False
        self.reason = reason
        log.warning("UDP %s off: %s; sending one datagram per sendmsg", self.name.upper(), reason)


def probe_gso(sock: socket.socket, want: bool = True) -> Offload:
    """Decide whether :func:`send_datagrams` may batch with UDP GSO on ``sock``.

    ``want`` ``False`` (``--no-gso``) gives ``off (--no-gso)``. Otherwise the socket is asked
    for ``UDP_SEGMENT`` (``getsockopt(SOL_UDP, UDP_SEGMENT)``, udp(7)): kernels before 4.18
    refuse it (ENOPROTOOPT) and the result is ``off (UDP_SEGMENT refused: ...)``. Whether the
    route's device can segment (checksum offload, MTU) shows only on a real send, so the
    result is ``on (not yet used)`` until the first batch leaves; a batch the kernel refuses
    (EINVAL, EIO, ENOPROTOOPT, EOPNOTSUPP, EMSGSIZE) turns it off and its datagrams are sent
    again one by one (nothing is lost). The outcome is logged; the caller puts
    :meth:`Offload.describe` in its status. Never raises.
    """
    if not want:
        return Offload("gso", False, "--no-gso")
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError as err:
        gso = Offload("gso", False, f"UDP_SEGMENT refused: {err.strerror or err}")
        log.info("UDP GSO: %s (needs Linux >= 4.18)", gso.describe())
        return gso
    gso = Offload("gso", True, "not yet used")
    log.debug("UDP GSO: UDP_SEGMENT accepted; the first batch decides")
    return gso


def enable_gro(sock: socket.socket, want: bool = True) -> Offload:
    """Ask for UDP GRO on a receiving socket (``setsockopt(SOL_UDP, UDP_GRO, 1)``, udp(7)).

    With GRO on, one ``recvmsg`` may return several datagrams of one flow coalesced, with
    their size in a ``UDP_GRO`` control message (read it with :func:`gro_segment_size`).
    ``want`` ``False`` (``--no-gro``) gives ``off (--no-gro)``; a kernel that refuses the
    option (before 5.0: ENOPROTOOPT) gives ``off (UDP_GRO refused: ...)``, logged. Never raises.
    """
    if not want:
        return Offload("gro", False, "--no-gro")
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError as err:
        gro = Offload("gro", False, f"UDP_GRO refused: {err.strerror or err}")
        log.info("UDP GRO: %s (needs Linux >= 5.0)", gro.describe())
        return gro
    return Offload("gro", True)


def gro_segment_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The segment size (bytes) in ``recvmsg``'s ``ancdata``, 0 without one.

    0 means the buffer is one datagram; ``ancdata`` is ``[(level, type, data), ...]``.
    """
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= _GRO_SIZE.size:
            return int(_GRO_SIZE.unpack_from(data)[0])
    return 0


def send_datagrams(
    sock: socket.socket,
    dest: tuple[str, int],
    datagrams: Sequence[Sequence[BytesLike]],
    stats: SendStats | None = None,
    gso: Offload | None = None,
) -> int:
    """Send ``datagrams`` (each a sequence of buffers, e.g. ``(header, payload)``) to ``dest``.

    Without GSO (``gso`` ``None`` or off) this is :func:`send_fragments`. With it, runs of
    consecutive datagrams of equal total length (bytes) — the last of a run may be shorter,
    and a shorter one ends the run — leave in one ``sendmsg`` whose iovec is every buffer of
    the run (no join: the kernel gathers) with a ``UDP_SEGMENT`` control message of that
    length; a run has at most :data:`GSO_MAX_SEGMENTS` datagrams and
    :data:`GSO_MAX_BYTES` bytes. A run of one is a plain ``sendmsg``.

    A batch is all or nothing: EAGAIN/EWOULDBLOCK/ENOBUFS stops at its first datagram (not
    consumed, ``stats.blocked`` += 1); another error drops all its datagrams (counted per
    datagram in ``stats.errors[errno]``) and sending goes on, as in :func:`send_fragments`.
    An error that says GSO does not work here (EINVAL, EIO, ENOPROTOOPT, EOPNOTSUPP, EMSGSIZE)
    turns ``gso`` off and the rest, that batch included, is sent one datagram per ``sendmsg``.

    Returns:
        How many datagrams were consumed (sent or dropped) from the start of ``datagrams``.

    """
    if gso is None or not gso.enabled:
        return send_fragments(sock, dest, datagrams, stats)
    st = SEND_STATS if stats is None else stats
    n = len(datagrams)
    i = 0
    while i < n:
        first = datagrams[i]
        seg = sum(map(len, first))
        iov = list(first)
        total = seg
        j = i + 1
        if seg > 0:
            end = min(n, i + GSO_MAX_SEGMENTS)
            while j < end:
                nxt = datagrams[j]
                size = sum(map(len, nxt))
                if size > seg or size == 0 or total + size > GSO_MAX_BYTES:
                    break
                iov.extend(nxt)
                total += size
                j += 1
                if size < seg:
                    break
        count = j - i
        try:
            if count == 1:
                sock.sendmsg(iov, [], 0, dest)
            else:
                sock.sendmsg(iov, [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(seg))], 0, dest)
        except OSError as err:
            if err.errno in _TRANSIENT:
                st.blocked += 1
                return i
            if count > 1 and err.errno in _GSO_FALLBACK:
                gso.disable(
                    f"a {count} x {seg}-byte UDP_SEGMENT batch to {dest[0]}:{dest[1]} failed: "
                    f"{err.strerror or err}"
                )
                return i + send_fragments(sock, dest, datagrams[i:], st)
            st.record_error(err, dest, count)
        else:
            st.sent += count
            if count > 1:
                st.gso_sent += count
                st.gso_calls += 1
                if gso.reason:
                    gso.reason = ""
                    log.info("UDP GSO: on (a %d-datagram batch went out)", count)
        i = j
    return n
