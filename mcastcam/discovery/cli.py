"""``mcastcam-discover``: list the mcastcam senders on a LAN (broadcast discovery).

Run ``mcastcam-discover --help`` for the options. Prints one line per sender (name, stream id,
transport and group:port, size, fps, host) or, with ``--json``, a JSON array. Exits 0 when at
least one sender answered, :data:`EXIT_NOT_FOUND` (3) when none did (a note goes to stderr; with
``--json`` ``[]`` is still printed), 2 on a bad value, 1 on a socket failure.
"""

from __future__ import annotations

import argparse
import json
import sys

from mcastcam import cli_util, net
from mcastcam.discovery.query import discover
from mcastcam.keys import add_key_file_option, load_master_keys
from mcastcam.protocol.config import DEFAULT_DISCOVERY_PORT, DEFAULT_DISCOVERY_TIMEOUT, QueryConfig
from mcastcam.protocol.trust import DiscoveryAuth
from mcastcam.protocol.wire import MAX_NAME_BYTES

PROG = "mcastcam-discover"

EXIT_NOT_FOUND = 3
"""Exit status when no sender answered within the timeout (issue #12)."""

EXAMPLES = """\
examples:
  mcastcam-discover                       senders on the default route's LAN, after 1 s
  mcastcam-discover --interface eth0 --timeout 2 --json
  mcastcam-discover --name kitchen        only the sender called "kitchen"
  mcastcam-discover --key-file cam.key    tagged queries; only senders holding the key answer

exit status:
  0  at least one sender answered     3  no sender answered within the timeout
  2  bad option or value              1  the socket could not be set up
"""


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r}: expected 1..65535")
    return int(text)


def _name(text: str) -> str:
    if len(text.encode()) > MAX_NAME_BYTES:
        raise argparse.ArgumentTypeError(f"name {text!r} is longer than {MAX_NAME_BYTES} bytes")
    return text


def build_parser() -> cli_util.Parser:
    """The argument parser (exposed for the docs and tests)."""
    p = cli_util.Parser(
        prog=PROG,
        config_file=True,
        description="Broadcast a discovery query on a LAN and list the mcastcam senders "
        "that answer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--interface",
        metavar="NAME",
        help="network interface to ask on, e.g. eth0 (default: the default route's); "
        "it needs a broadcast address (not lo)",
    )
    p.add_argument(
        "--timeout",
        type=cli_util.positive_float,
        default=DEFAULT_DISCOVERY_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for answers (default {DEFAULT_DISCOVERY_TIMEOUT:g})",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_DISCOVERY_PORT,
        help=f"the senders' discovery UDP port (default {DEFAULT_DISCOVERY_PORT})",
    )
    p.add_argument("--name", type=_name, help="only the sender with this stream name")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of lines")
    add_key_file_option(p)
    p.add_argument("--debug", action="store_true", help="debug logging, tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return p


async def _run(cfg: QueryConfig) -> int:
    masters = load_master_keys(cfg.key_file)  # ConfigError (exit 2) before any socket
    auth = DiscoveryAuth(masters) if masters else None
    iface = net.resolve_interface(cfg.interface)
    found = await discover(iface, port=cfg.port, timeout=cfg.timeout, name=cfg.name, auth=auth)
    if cfg.json:
        print(json.dumps([f.to_json() for f in found]))
    else:
        for f in found:
            print(f.describe())
    sys.stdout.flush()
    if not found:
        print(f"no sender found on {iface.name} within {cfg.timeout:g} s", file=sys.stderr)
        return EXIT_NOT_FOUND
    return cli_util.EXIT_OK


def _parse(argv: list[str]) -> QueryConfig:
    opts = build_parser().parse_args(argv)
    cfg = QueryConfig(
        interface=opts.interface,
        port=opts.port,
        timeout=opts.timeout,
        name=opts.name or None,
        json=opts.json,
        debug=opts.debug,
        quiet=opts.quiet,
        key_file=opts.key_file,
    )
    cli_util.setup_logging(cfg.debug, cfg.quiet or not cfg.debug)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mcastcam-discover``; returns the exit code (0, 1, 2, 3 or 130)."""
    return cli_util.run_main(PROG, argv, _parse, _run, lambda c: c.debug)


if __name__ == "__main__":
    sys.exit(main())
