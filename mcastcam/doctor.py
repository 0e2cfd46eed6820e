"""``mcastcam doctor``: check why multicast would not arrive on this host, and say the fix.

Run ``mcastcam doctor --help``. Reads ``/sys/class/net``, ``/proc/sys/net``, ``/proc/net/igmp``,
``ip -j route get``, ``nft -j list ruleset`` and ``iptables-save``; opens a UDP socket to
measure the buffer the kernel grants; listens on a raw IGMP socket for a querier (it never
sends a query); loops a few datagrams through the group on the interface (TTL 0, so nothing
leaves the host); asks the LAN for senders (broadcast discovery, the interface's broadcast
address only). The conclusions are drawn by the pure :mod:`mcastcam.diagnosis`.

Exit codes: 0 when no check failed (warnings allowed; ``--strict`` makes them count), 1 when
one did, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mcastcam import cli_util, diagnosis, net
from mcastcam.diagnosis import Check, Packet, Status
from mcastcam.discovery.query import discover
from mcastcam.errors import ConfigError, McastcamError
from mcastcam.protocol.config import DEFAULT_DISCOVERY_PORT, DEFAULT_GROUP, DEFAULT_PORT
from mcastcam.receiver.cli import DEFAULT_RCVBUF

__all__ = ["DoctorOptions", "build_parser", "main", "run_checks", "self_test"]

PROG = "mcastcam doctor"

#: What ``mcastcam-recv`` asks for ``SO_RCVBUF`` by default (``--rcvbuf``), bytes.
RECEIVER_RCVBUF = DEFAULT_RCVBUF

SELF_TEST_DATAGRAMS = 5
SELF_TEST_TIMEOUT = 1.0
DEFAULT_IGMP_WAIT = 3.0

EXAMPLES = """\
examples:
  mcastcam doctor --interface eth0                     every check, on eth0
  mcastcam doctor --interface eth0 --group 239.255.10.1:5004 --json
  mcastcam doctor --interface eth0 --igmp-wait 130     wait a whole query interval
  mcastcam doctor --interface eth0 --key-file /etc/mcastcam/stream.key

exit status: 0 no check failed (warnings allowed), 1 a check failed (--strict: or warned),
2 usage error
"""

_SYS_NET = Path("/sys/class/net")
_MAX_BUFFER = 2**31 - 1  # setsockopt(SO_RCVBUF) takes a C int
_PROC_SYS = Path("/proc/sys/net")


@dataclass(frozen=True)
class DoctorOptions:
    """What to check.

    ``interface``: name, ``None`` for the default route's; ``group``/``port``: the stream's
    multicast group and UDP port; ``discovery_port``: UDP; ``rcvbuf``/``sndbuf``: the
    ``SO_RCVBUF``/``SO_SNDBUF`` bytes the receiver/sender will ask (``sndbuf`` ``None``: the
    sender asks nothing); ``igmp_wait``/``discover_timeout``: seconds to listen;
    ``key_file``: a path or ``None``; ``json``/``strict``/``debug``/``quiet``: output.
    """

    interface: str | None = None
    group: str = DEFAULT_GROUP.partition(":")[0]
    port: int = DEFAULT_PORT
    discovery_port: int = DEFAULT_DISCOVERY_PORT
    rcvbuf: int = RECEIVER_RCVBUF
    sndbuf: int | None = None
    igmp_wait: float = DEFAULT_IGMP_WAIT
    discover_timeout: float = 1.0
    key_file: str | None = None
    json: bool = False
    strict: bool = False
    debug: bool = False
    quiet: bool = False


# ---------------------------------------------------------------------------- reading


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path, base: int = 10) -> int | None:
    text = _read(path)
    try:
        return int(text.strip(), base) if text is not None else None
    except ValueError:
        return None


def _command(cmd: list[str], timeout: float = 5.0) -> tuple[int, str, str]:
    """``(returncode, stdout, stderr)``; 127 when the program is missing."""
    if shutil.which(cmd[0]) is None:
        return 127, "", f"`{cmd[0]}` not found"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 126, "", str(err)
    return done.returncode, done.stdout, done.stderr


def _buffer_granted(which: str, size: int) -> int | None:
    """``getsockopt`` after asking ``size`` bytes of ``SO_RCVBUF``/``SO_SNDBUF`` on a UDP socket."""
    option = socket.SO_RCVBUF if which == "rcv" else socket.SO_SNDBUF
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            return int(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:
        return None


def buffer_checks(opts: DoctorOptions) -> list[Check]:
    """``rmem_max`` against the receiver's ``--rcvbuf``, ``wmem_max`` against ``--sndbuf``."""
    core = _PROC_SYS / "core"
    return [
        diagnosis.evaluate_buffer(
            "rcv", opts.rcvbuf, _read_int(core / "rmem_max"),
            _buffer_granted("rcv", opts.rcvbuf), _read_int(core / "rmem_default"),
            "mcastcam-recv (--rcvbuf)"),
        diagnosis.evaluate_buffer(
            "snd", opts.sndbuf, _read_int(core / "wmem_max"),
            None if opts.sndbuf is None else _buffer_granted("snd", opts.sndbuf),
            _read_int(core / "wmem_default"), "mcastcam-send (--sndbuf)"),
    ]  # fmt: skip


def firewall_check(name: str, opts: DoctorOptions, broadcast: str | None) -> Check:
    """The input rules of nftables (``nft -j list ruleset``) and iptables (``iptables-save``)."""
    rulesets = []
    errors = []
    code, out, err = _command(["nft", "-j", "list", "ruleset"])
    if code == 0:
        try:
            rulesets.append(diagnosis.parse_nft_ruleset(out))
        except ValueError as exc:
            errors.append(f"nft: {exc}")
    else:
        errors.append(f"nft: {err.strip() or f'exit {code}'}")
    code, out, err = _command(["iptables-save"])
    if code == 0:
        rulesets.append(diagnosis.parse_iptables_save(out))
    elif code != 127:  # iptables is optional; nft sees iptables-nft rules anyway
        errors.append(f"iptables-save: {err.strip() or f'exit {code}'}")
    stream = Packet(opts.port, opts.group, name)
    disc = Packet(opts.discovery_port, broadcast, name)
    return diagnosis.evaluate_firewall(rulesets, stream, disc, errors)


def key_file_check(path: str) -> Check:
    """Mode and readability of ``--key-file``."""
    try:
        st = os.stat(path)
    except OSError as err:
        return diagnosis.evaluate_key_file(path, None, False, False, err.strerror)
    return diagnosis.evaluate_key_file(path, stat.S_IMODE(st.st_mode), stat.S_ISREG(st.st_mode),
                                       os.access(path, os.R_OK))


def static_checks(name: str, opts: DoctorOptions) -> tuple[list[Check], net.Interface | None]:
    """Everything read from files and tools; the interface when it has an IPv4 address."""
    checks: list[Check] = []
    flags = _read_int(_SYS_NET / name / "flags", 16)
    operstate = (_read(_SYS_NET / name / "operstate") or "").strip() or None
    link = diagnosis.evaluate_link(name, flags, operstate)
    if flags is None:
        have = sorted(p.name for p in _SYS_NET.iterdir()) if _SYS_NET.is_dir() else []
        link = Check(link.name, link.status, f"{link.finding} (have: {', '.join(have)})",
                     link.fix)
    checks.append(link)
    iface: net.Interface | None = None
    if flags is not None:
        checks.append(diagnosis.evaluate_multicast_flag(name, flags))
        try:
            iface = net.resolve_interface(name)
        except ConfigError:
            iface = None
        loopback = bool(flags & diagnosis.IFF_LOOPBACK)
        checks.append(diagnosis.evaluate_address(
            name, iface.address if iface else None, iface.netmask if iface else None,
            net.reported_broadcast(name) if iface else None, loopback))  # fmt: skip
        checks.append(diagnosis.evaluate_route(
            name, opts.group, *_command(["ip", "-j", "route", "get", opts.group])))
        conf = _PROC_SYS / "ipv4" / "conf"
        checks.append(diagnosis.evaluate_rp_filter(
            name, _read_int(conf / "all" / "rp_filter"), _read_int(conf / name / "rp_filter")))
    checks += buffer_checks(opts)
    checks.append(firewall_check(name, opts, iface.broadcast if iface else None))
    for warning in net.check_group(opts.group):
        checks.append(Check("group", Status.WARN, warning, "pick a group 239.255.X.Y, X > 1"))
    if opts.key_file:
        checks.append(key_file_check(opts.key_file))
    return checks, iface


# ---------------------------------------------------------------------------- live checks


async def self_test(iface: net.Interface, group: str, count: int = SELF_TEST_DATAGRAMS,
                    timeout: float = SELF_TEST_TIMEOUT) -> tuple[int, int, int, float]:  # noqa: ASYNC109
    """Send ``count`` datagrams to ``group`` on a port the OS picks, TTL 0, loop on.

    The receiver socket joins ``group`` on ``iface`` (like ``mcastcam-recv``); the sender
    pins ``iface`` (``IP_MULTICAST_IF``) with TTL 0, so no datagram leaves this host. Waits at
    most ``timeout`` seconds.

    Returns:
        ``(port, sent, received, elapsed seconds)``; only datagrams carrying this run's
        random token count.

    Raises:
        NetworkSetupError, ConfigError: a socket could not be set up.
    """
    loop = asyncio.get_running_loop()
    token = secrets.token_bytes(8)
    rx = net.open_multicast_receiver(group, 0, iface)
    try:
        port = int(rx.getsockname()[1])
        tx = net.open_multicast_sender(iface, ttl=0, loop=True)
        try:
            start = time.monotonic()
            sent = 0
            for i in range(count):
                with contextlib.suppress(BlockingIOError):
                    tx.sendto(b"mcastcam-doctor " + token + bytes([i]), (group, port))
                    sent += 1
            got: set[int] = set()
            deadline = start + timeout
            for _ in range(count * 10):
                left = deadline - time.monotonic()
                if left <= 0 or len(got) >= sent:
                    break
                try:
                    data = await asyncio.wait_for(loop.sock_recv(rx, 2048), left)
                except TimeoutError:
                    break
                if data[:-1] == b"mcastcam-doctor " + token:
                    got.add(data[-1])
            return port, sent, len(got), time.monotonic() - start
        finally:
            tx.close()
    finally:
        rx.close()


async def _self_test_check(iface: net.Interface, group: str) -> Check:
    try:
        port, sent, received, elapsed = await self_test(iface, group)
    except McastcamError as err:
        return diagnosis.evaluate_self_test(iface.name, group, 0, 0, 0, str(err), 0.0)
    return diagnosis.evaluate_self_test(iface.name, group, port, sent, received, None, elapsed)


async def listen_for_querier(name: str, wait: float) -> tuple[list[tuple[str, int]], str | None]:
    """Listen ``wait`` seconds on a raw ``IPPROTO_IGMP`` socket bound to ``name``.

    Never sends. Returns ``(queries heard as (source, version), error)``; ``error`` says why
    listening was impossible (no ``CAP_NET_RAW``).
    """
    if wait <= 0:
        return [], "not listened (--igmp-wait 0)"
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
    except PermissionError:
        return [], "a raw IGMP socket needs root (CAP_NET_RAW)"
    except OSError as err:
        return [], f"raw IGMP socket: {err.strerror or err}"
    heard: list[tuple[str, int]] = []
    loop = asyncio.get_running_loop()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
        sock.setblocking(False)
        deadline = time.monotonic() + wait
        for _ in range(1000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
            except TimeoutError:
                break
            query = diagnosis.parse_igmp_query(data)
            if query is not None:
                heard.append((str(addr[0]), query[0]))
                break
    except OSError as err:
        return heard, f"raw IGMP socket on {name}: {err.strerror or err}"
    finally:
        sock.close()
    return heard, None


async def _igmp_check(name: str, loopback: bool, wait: float) -> Check:
    conf = _PROC_SYS / "ipv4" / "conf" / name
    force = _read_int(conf / "force_igmp_version")
    proc = diagnosis.parse_proc_igmp(_read(Path("/proc/net/igmp")) or "")
    querier = proc.get(name, {}).get("querier")
    if loopback:
        return diagnosis.evaluate_igmp(name, True, force, querier, [], 0.0)
    heard, error = await listen_for_querier(name, wait)
    return diagnosis.evaluate_igmp(name, False, force, querier, heard, wait, error)


async def _discovery_check(iface: net.Interface, opts: DoctorOptions) -> Check:
    if iface.broadcast is None:
        return diagnosis.evaluate_discovery(iface.name, [], opts.discover_timeout,
                                            f"{iface.name} has no broadcast address")
    try:
        found = await discover(iface, port=opts.discovery_port, timeout=opts.discover_timeout)
    except McastcamError as err:
        return diagnosis.evaluate_discovery(iface.name, [], opts.discover_timeout, None,
                                            str(err))
    return diagnosis.evaluate_discovery(iface.name, [f.describe() for f in found],
                                        opts.discover_timeout, None)


async def run_checks(opts: DoctorOptions) -> tuple[str, list[Check]]:
    """Every check, in a stable order; live ones (querier, self-test, discovery) run together.

    Returns:
        ``(interface name, checks)``.

    Raises:
        ConfigError: a bad group (not multicast).
    """
    net.check_group(opts.group)
    name = opts.interface or net.resolve_interface(None).name
    checks, iface = await asyncio.to_thread(static_checks, name, opts)
    link = checks[0]
    if iface is None or link.status is Status.FAIL:
        return name, checks
    loopback = bool((_read_int(_SYS_NET / name / "flags", 16) or 0) & diagnosis.IFF_LOOPBACK)
    live = await asyncio.gather(
        _igmp_check(name, loopback, opts.igmp_wait),
        _self_test_check(iface, opts.group),
        _discovery_check(iface, opts),
    )
    order = {"interface": 0, "multicast_flag": 1, "address": 2, "route": 3, "rp_filter": 4}
    head = [c for c in checks if c.name in order]
    tail = [c for c in checks if c.name not in order]
    return name, [*head, live[0], *tail, live[1], live[2]]


# ---------------------------------------------------------------------------- CLI


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r}: expected 1..65535")
    return int(text)


def _bytes(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= _MAX_BUFFER:
        raise argparse.ArgumentTypeError(
            f"bad size {text!r}: expected bytes, 1 to {_MAX_BUFFER} (a C int)")
    return int(text)


def build_parser() -> cli_util.Parser:
    """The argument parser (exposed for the docs and tests)."""
    p = cli_util.Parser(
        prog=PROG,
        description="Check this host for what stops multicast from arriving (interface, "
        "route, rp_filter, buffers, firewall, IGMP querier), loop a few datagrams through the "
        "group (TTL 0), list the senders, and say the fix for each finding.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--interface", metavar="NAME",
                   help="interface to check, e.g. eth0 (default: the default route's)")
    p.add_argument("--group", metavar="ADDR:PORT", default=DEFAULT_GROUP,
                   help=f"the stream's multicast group and UDP port (default {DEFAULT_GROUP})")
    p.add_argument("--discovery-port", type=_port, default=DEFAULT_DISCOVERY_PORT,
                   metavar="PORT", help=f"discovery UDP port (default {DEFAULT_DISCOVERY_PORT})")
    p.add_argument("--rcvbuf", type=_bytes, default=RECEIVER_RCVBUF, metavar="BYTES",
                   help="the SO_RCVBUF mcastcam-recv will ask (its --rcvbuf; default "
                   f"{RECEIVER_RCVBUF})")
    p.add_argument("--sndbuf", type=_bytes, metavar="BYTES",
                   help="the SO_SNDBUF mcastcam-send will ask (its --sndbuf; default: none)")
    p.add_argument("--igmp-wait", type=cli_util.non_negative_float, default=DEFAULT_IGMP_WAIT,
                   metavar="S", help="seconds to listen for an IGMP querier (default "
                   f"{DEFAULT_IGMP_WAIT:g}; queriers ask every 125 s; 0: do not listen)")
    p.add_argument("--discover-timeout", type=cli_util.positive_float, default=1.0,
                   metavar="S", help="seconds to wait for senders to answer (default 1)")
    p.add_argument("--key-file", metavar="FILE", help="check this key file's permissions")
    p.add_argument("--json", action="store_true", help="print the checks as a JSON object")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--debug", action="store_true", help="debug logging, tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return p


def _parse(argv: list[str]) -> DoctorOptions:
    args = build_parser().parse_args(argv)
    group, port = net.parse_host_port(args.group, DEFAULT_PORT)
    net.check_group(group)
    opts = DoctorOptions(
        interface=args.interface, group=group, port=port, discovery_port=args.discovery_port,
        rcvbuf=args.rcvbuf, sndbuf=args.sndbuf, igmp_wait=args.igmp_wait,
        discover_timeout=args.discover_timeout, key_file=args.key_file, json=args.json,
        strict=args.strict, debug=args.debug, quiet=args.quiet,
    )  # fmt: skip
    cli_util.setup_logging(opts.debug, opts.quiet or not opts.debug)
    return opts


async def _run(opts: DoctorOptions) -> int:
    name, checks = await run_checks(opts)
    code = diagnosis.exit_code(checks, opts.strict)
    if opts.json:
        worst = max((c.status for c in checks), key=lambda s: s.rank)
        print(json.dumps({
            "interface": name, "group": f"{opts.group}:{opts.port}",
            "status": worst.value, "exit": code, "checks": [c.to_json() for c in checks],
        }, indent=2))  # fmt: skip
    else:
        print(diagnosis.render_text(checks))
    sys.stdout.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mcastcam doctor``; returns the exit code (0, 1, 2 or 130)."""
    return cli_util.run_main(PROG, argv, _parse, _run, lambda o: o.debug)


if __name__ == "__main__":
    sys.exit(main())
