"""``mcastcam relay``: carry a stream over unicast UDP to a LAN where multicast does not pass.

Run ``mcastcam relay --help`` for every option with examples; docs/scaling.md explains the
design (what crosses, how far receivers' reports come back, the limits).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import socket
import sys

from mcastcam import cli_util, net
from mcastcam.errors import ConfigError
from mcastcam.keys import add_key_file_option, load_master_keys
from mcastcam.protocol.auth import relay_key
from mcastcam.protocol.config import DEFAULT_PORT
from mcastcam.protocol.relay import Port, RelayConfig, RelayCore, Role
from mcastcam.relay.app import RelayApp
from mcastcam.sender.cli import write_json_atomically

log = logging.getLogger("mcastcam.relay")

PROG = "mcastcam relay"
DEFAULT_TUNNEL_PORT = 8991

EXAMPLES = """\
examples (the sender's LAN is 10.0.1.0/24, the far LAN 10.0.2.0/24, unicast between them):
  on 10.0.1.5 (near: joins the group, forwards it to the far relay):
    mcastcam relay --role near --listen-group 239.255.10.1:5004 --interface eth0 \\
        --peer 10.0.2.7:8991 --tunnel-port 8991
  on 10.0.2.7 (far: multicasts it on its LAN; receivers there need nothing special):
    mcastcam relay --role far --out-group 239.255.10.1:5004 --out-interface eth0 \\
        --peer 10.0.1.5:8991 --tunnel-port 8991 --ttl 1
    mcastcam-recv --group 239.255.10.1:5004 --interface eth0     (any host of the far LAN)
  with a key (both relays, the sender and the receivers hold the same key file):
    add --key-file cam.key: pings and pongs are tagged, and only tagged mcastcam datagrams
    cross the tunnel
"""


def build_parser() -> cli_util.Parser:
    """The argument parser (exposed for the docs and tests)."""
    p = cli_util.Parser(
        prog=PROG,
        description="Forward a multicast stream, every datagram unchanged, over unicast UDP "
        "to a peer relay that multicasts it on its own LAN; receiver reports and NACKs come "
        "back the same way.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--role", choices=("near", "far"), required=True,
                   help="near: on the sender's LAN (joins --listen-group); far: on the other "
                   "LAN (multicasts to --out-group)")  # fmt: skip
    p.add_argument("--listen-group", metavar="G:P", help="near: the stream's group to join")
    p.add_argument("--interface", metavar="IF",
                   help="near: the interface to join on; far: default of --out-interface")
    p.add_argument("--peer", metavar="HOST:PORT", required=True,
                   help="the other relay (PORT: its --tunnel-port, default ours)")
    p.add_argument("--tunnel-port", type=int, default=DEFAULT_TUNNEL_PORT, metavar="N",
                   help=f"UDP port of the tunnel on this host (default {DEFAULT_TUNNEL_PORT}); "
                   "only datagrams from --peer are accepted on it")  # fmt: skip
    p.add_argument("--out-group", metavar="G:P",
                   help="far: the group to multicast on (default --listen-group)")
    p.add_argument("--out-interface", metavar="IF", help="far: the interface to multicast on")
    p.add_argument("--ttl", type=int, default=1,
                   help="far: multicast TTL (default 1: this LAN only)")
    p.add_argument("--max-rate", type=cli_util.parse_rate, default=100e6, metavar="BITS",
                   help="most bits/s sent on the tunnel and on the far LAN (default 100M)")
    p.add_argument("--queue", type=int, default=4096, metavar="N",
                   help="datagrams waiting per direction at most (and 4 MiB; default 4096)")
    p.add_argument("--keepalive", type=cli_util.positive_float, default=1.0, metavar="S",
                   help="seconds between two pings of the peer (default 1)")
    p.add_argument("--dead-after", type=cli_util.positive_float, default=3.5, metavar="S",
                   help="seconds without an answer before the peer is down (default 3.5)")
    add_key_file_option(p)
    p.add_argument("--status-json", metavar="FILE", help="write state and counters every second")
    p.add_argument("--debug", action="store_true", help="debug logging, tracebacks")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return p


def _resolve(host: str) -> str:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(f"--peer {host!r}: cannot resolve it ({exc})") from exc
    return str(infos[0][4][0])


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check ``argv``; raises ``ConfigError`` naming the bad option."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.tunnel_port <= 65535:
        raise ConfigError(f"bad --tunnel-port {args.tunnel_port}: expected 1..65535")
    host, port = net.parse_host_port(args.peer, args.tunnel_port)
    if not host:
        raise ConfigError(f"--peer {args.peer!r} needs a host, e.g. 10.0.2.7:8991")
    args.peer_addr = (_resolve(host), port)
    if args.role == "near":
        if not args.listen_group or not args.interface:
            raise ConfigError("--role near needs --listen-group G:P and --interface IF")
        args.group = net.parse_host_port(args.listen_group, DEFAULT_PORT)
    else:
        out = args.out_group or args.listen_group
        if not out or not (args.out_interface or args.interface):
            raise ConfigError("--role far needs --out-group G:P and --out-interface IF")
        args.group = net.parse_host_port(out, DEFAULT_PORT)
        if not 0 <= args.ttl <= 255:
            raise ConfigError(f"bad --ttl {args.ttl}: must be 0..255 (1 = this LAN only)")
    if args.queue < 1:
        raise ConfigError(f"bad --queue {args.queue}: at least 1")
    masters = load_master_keys(args.key_file)  # ConfigError (exit 2) before any socket
    args.cfg = RelayConfig(
        role=Role(args.role), peer=args.peer_addr,
        out_group=args.group if args.role == "far" else None, keepalive=args.keepalive,
        dead_after=args.dead_after, retry_max=max(10.0, args.keepalive),
        queue_datagrams=args.queue, rate=args.max_rate / 8,
        tunnel_keys=tuple(relay_key(m) for m in masters),
        key_ids=frozenset(m.key_id for m in masters),
    )  # fmt: skip
    return args


def open_sockets(args: argparse.Namespace) -> tuple[dict[Port, socket.socket], str]:
    """The role's sockets and a description for the log; the caller closes them."""
    sockets: dict[Port, socket.socket] = {}
    group, port = args.group
    try:
        if args.role == "near":
            iface = net.resolve_interface(args.interface)
            sockets[Port.GROUP] = net.open_multicast_receiver(group, port, iface)
            sockets[Port.LOCAL] = net.open_unicast_receiver(iface.address, 0)
            what = f"near: group {group}:{port} on {iface.name} ({iface.address})"
        else:
            iface = net.resolve_interface(args.out_interface or args.interface)
            sockets[Port.LOCAL] = net.open_multicast_sender(iface, args.ttl, loop=True)
            local = sockets[Port.LOCAL].getsockname()
            what = (f"far: to group {group}:{port} on {iface.name} TTL {args.ttl}, reports "
                    f"and NACKs on {local[0]}:{local[1]}")  # fmt: skip
        sockets[Port.TUNNEL] = net.open_unicast_receiver("", args.tunnel_port)
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets, f"{what}, tunnel port {args.tunnel_port}"


async def run(args: argparse.Namespace) -> int:
    """Run until cancelled (SIGINT/SIGTERM)."""
    cli_util.setup_logging(args.debug, args.quiet)
    sockets, what = open_sockets(args)
    loop = asyncio.get_running_loop()
    core = RelayCore(args.cfg, loop.time(), first_ping_seq=secrets.randbits(32))
    if args.cfg.key_ids:
        what += f", key id {min(args.cfg.key_ids)} (tagged pings; tagged datagrams only)"
    app = RelayApp(core, sockets, what)
    try:
        app.start()
        while True:
            await asyncio.sleep(1.0)
            if args.status_json:
                write_json_atomically(args.status_json, app.status())
    finally:
        app.close()
        for sock in sockets.values():
            sock.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mcastcam relay`` / ``mcastcam-relay``; returns the exit status."""
    return cli_util.run_main(PROG, argv, parse, run, lambda o: o.debug)


if __name__ == "__main__":
    sys.exit(main())
