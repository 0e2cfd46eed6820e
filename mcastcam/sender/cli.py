"""``mcastcam-send``: capture or play JPEG frames and send them to a multicast group.

Run ``mcastcam-send --help`` for every option with examples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys

from aiohttp import web

from mcastcam import cli_util, net
from mcastcam.discovery.service import DiscoveryService
from mcastcam.errors import ConfigError
from mcastcam.keys import add_key_file_option, load_master_keys
from mcastcam.metrics import SenderMetrics, start_metrics_server
from mcastcam.protocol import config
from mcastcam.protocol.auth import Aead
from mcastcam.protocol.codec import DiscoveryAnnounce
from mcastcam.protocol.config import (
    DEFAULT_GROUP,
    DEFAULT_PORT,
    DiscoveryConfig,
    SenderConfig,
    SenderRunConfig,
    SourceConfig,
)
from mcastcam.protocol.fragmenter import symbol_size_for_mtu
from mcastcam.protocol.repair import FecMode
from mcastcam.protocol.sender import SenderSession
from mcastcam.protocol.trust import DiscoveryAuth, Sealer
from mcastcam.protocol.wire import Transport
from mcastcam.sender.app import SenderApp, wall_offset_ns

log = logging.getLogger("mcastcam.send")

PROG = "mcastcam-send"

EXAMPLES = """\
examples:
  mcastcam-send                    the first camera (or the bundled sample) to 239.255.0.1:8989
  mcastcam-send --source /dev/video0 --size 1280x720 --fps 30 --interface eth0
  mcastcam-send --source v4l2:/dev/video2 --format yuyv --quality 85 --control brightness=140
  mcastcam-send --source recording.mjpeg --loop --fps 25 --group 239.255.10.1:5004
  mcastcam-send --source testpattern --size 1920x1080 --max-rate 50M
  mcastcam-send --source sample --interface lo --ttl 0  multicast that never leaves this host
  mcastcam-send --broadcast --port 8989 --interface wlan0   Wi-Fi without multicast
  mcastcam-send --unicast 10.8.0.2:8989 --unicast 10.8.0.3:8989   over a VPN
  mcastcam-send --metrics 9101    also Prometheus metrics at http://127.0.0.1:9101/metrics
  mcastcam-send --config /etc/mcastcam/send.toml   the same options from a TOML file
  mcastcam-send --list-devices
"""


def build_parser() -> cli_util.Parser:
    """The argument parser (exposed for the docs and tests)."""
    p = cli_util.Parser(
        prog=PROG,
        config_file=True,
        description="Send MJPEG camera frames as UDP multicast (or broadcast/unicast) "
        "datagrams; receive them with mcastcam-recv.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source")
    src.add_argument(
        "--source",
        metavar="SPEC",
        help="/dev/videoN or v4l2:/dev/videoN (camera), a .mjpeg/.mjpg file, a folder of "
        ".jpg files, 'testpattern', or 'sample' (a recording shipped with mcastcam). "
        "Default: the first V4L2 camera, else the sample",
    )
    src.add_argument(
        "--size",
        type=cli_util.parse_size,
        metavar="WxH",
        help="frame size for a camera or the test pattern, e.g. 1280x720",
    )
    src.add_argument(
        "--fps",
        type=cli_util.positive_float,
        help="frames per second (files and test pattern: default 30; camera: its rate)",
    )
    src.add_argument("--loop", action="store_true", help="play a file or folder again and again")
    src.add_argument(
        "--format",
        dest="fmt",
        type=str.upper,
        choices=["MJPEG", "YUYV"],
        metavar="{mjpeg,yuyv}",
        help="camera pixel format (default: MJPEG if offered, else YUYV encoded to JPEG)",
    )
    src.add_argument(
        "--quality",
        type=int,
        default=config.DEFAULT_QUALITY,
        help="JPEG quality 1-100 for frames mcastcam encodes (YUYV, test pattern); "
        f"default {config.DEFAULT_QUALITY}",
    )
    src.add_argument(
        "--subsampling",
        choices=["422", "420"],
        default=config.DEFAULT_SUBSAMPLING,
        help=f"chroma subsampling of frames mcastcam encodes; default {config.DEFAULT_SUBSAMPLING}",
    )
    src.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a V4L2 control by its kernel name, e.g. brightness=128 (repeatable)",
    )
    src.add_argument(
        "--list-devices",
        action="store_true",
        help="list V4L2 capture devices with formats, sizes and frame rates, then exit",
    )
    src.add_argument("--count", type=int, metavar="N", help="stop after N frames")

    tr = p.add_argument_group("transport")
    tr.add_argument(
        "--group",
        metavar="ADDR:PORT",
        help=f"multicast group and UDP port (default {DEFAULT_GROUP}); "
        "239.255.x.y is the organisation-local scope",
    )
    tr.add_argument(
        "--interface",
        metavar="NAME",
        help="network interface to send on, e.g. eth0 (default: the default route's)",
    )
    tr.add_argument(
        "--ttl",
        type=int,
        default=config.DEFAULT_TTL,
        help=f"multicast TTL: 0 = this host only, 1 = this LAN (default {config.DEFAULT_TTL}), "
        "more crosses routers",
    )
    tr.add_argument(
        "--no-multicast-loop",
        action="store_true",
        help="do not deliver our own multicast to receivers on this host (IP_MULTICAST_LOOP "
        "off; unrelated to --loop)",
    )
    tr.add_argument(
        "--no-loop",
        action="store_true",
        help="old spelling of --no-multicast-loop (deprecated)",
    )
    tr.add_argument(
        "--broadcast",
        action="store_true",
        help="send to the interface's subnet broadcast address instead of a group",
    )
    tr.add_argument(
        "--port", type=int, default=None, help=f"UDP port with --broadcast (default {DEFAULT_PORT})"
    )
    tr.add_argument(
        "--unicast",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="send to this receiver directly (repeatable); for routed or VPN links",
    )
    tr.add_argument(
        "--mtu",
        type=int,
        help="path MTU in bytes; symbols are sized to fit (default: the interface MTU)",
    )
    tr.add_argument(
        "--fec",
        default="auto",
        metavar="auto|off|PCT",
        help="loss repair: repair symbols per frame sized from what receivers report "
        "(auto, the default; a safe default while none report), a fixed percent of each "
        "frame's symbols (e.g. 10), or off (no FEC, no NACK repair)",
    )
    tr.add_argument(
        "--fec-scheme",
        default="rs",
        metavar="rs|raptorq",
        help="erasure code of the repair symbols: rs (Reed-Solomon over GF(2^16), MDS, the "
        "default) or raptorq (RFC 6330, unlimited fresh repair symbols, about 2.5x the CPU); "
        "receivers decode both (docs/protocol.md section 5)",
    )
    add_key_file_option(tr)
    tr.add_argument(
        "--encrypt",
        action="store_true",
        help="with --key-file: also encrypt the images (headers, sizes and timing stay "
        "visible; docs/security.md)",
    )
    tr.add_argument(
        "--aead",
        choices=("aes-128-gcm", "chacha20-poly1305"),
        default="aes-128-gcm",
        help="with --key-file: the symbol AEAD (chacha20-poly1305 for CPUs without AES "
        "instructions; default aes-128-gcm)",
    )
    tr.add_argument("--sndbuf", type=int, metavar="BYTES", help="SO_SNDBUF size")
    tr.add_argument(
        "--no-gso",
        action="store_true",
        help="one sendmsg per datagram, never UDP GSO batches (default: GSO where the "
        "kernel and the device allow it, Linux >= 4.18)",
    )
    tr.add_argument(
        "--max-rate",
        type=cli_util.parse_rate,
        metavar="BITS",
        help="cap the sending rate, bits/s with k/M/G suffixes, e.g. 20M; when the "
        "link is slower than the camera, whole frames are skipped (latest wins)",
    )
    tr.add_argument(
        "--spread",
        type=float,
        default=config.DEFAULT_SPREAD,
        help="spread each frame's datagrams over this fraction of the frame interval "
        f"(0..1, default {config.DEFAULT_SPREAD:g}; 0 = one burst)",
    )

    st = p.add_argument_group("stream")
    st.add_argument(
        "--discovery-port",
        type=int,
        default=config.DEFAULT_DISCOVERY_PORT,
        metavar="PORT",
        help=f"answer discovery queries on this UDP port (default {config.DEFAULT_DISCOVERY_PORT})",
    )
    st.add_argument(
        "--announce-interval",
        type=cli_util.non_negative_float,
        default=config.DEFAULT_ANNOUNCE_INTERVAL,
        metavar="S",
        help="broadcast an announce every S seconds "
        f"(default {config.DEFAULT_ANNOUNCE_INTERVAL:g}; 0 = only answer queries); "
        "discovery needs an interface with a broadcast address",
    )
    st.add_argument("--name", help="stream name shown to receivers (default: host name)")
    st.add_argument(
        "--heartbeat-interval",
        type=cli_util.non_negative_float,
        default=config.DEFAULT_HEARTBEAT_INTERVAL,
        metavar="S",
        help=f"seconds between heartbeats (default {config.DEFAULT_HEARTBEAT_INTERVAL:g}; "
        "0 disables)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--status-json",
        metavar="PATH",
        help="write the status (rates, receivers with loss and RTT) to PATH as "
        "JSON every second, for scripts",
    )
    out.add_argument(
        "--metrics",
        metavar="[ADDR:]PORT",
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR defaults to "
        "127.0.0.1; 0.0.0.0 for a scraper on another host)",
    )
    out.add_argument("--debug", action="store_true", help="debug logging; tracebacks on errors")
    out.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return p


def parse(argv: list[str]) -> SenderRunConfig:
    """Parse and validate ``argv`` into the run's configuration.

    Raises:
        cli_util.UsageError, ConfigError: a bad value (exit 2).
    """
    args = build_parser().parse_args(argv)
    if args.no_loop:
        print(f"{PROG}: warning: --no-loop is deprecated (it reads as the opposite of --loop); "
              "use --no-multicast-loop", file=sys.stderr)  # fmt: skip
    controls = {}
    for item in args.control:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--control {item!r}: expected NAME=VALUE, e.g. brightness=128")
        controls[key.strip()] = value.strip()
    source = SourceConfig(
        spec=args.source,
        size=args.size,
        fps=args.fps,
        loop=args.loop,
        fmt=args.fmt,
        quality=args.quality,
        subsampling=args.subsampling,
        controls=controls,
        count=args.count,
    )
    if sum([bool(args.group), args.broadcast, bool(args.unicast)]) > 1:
        raise ConfigError("--group, --broadcast and --unicast exclude each other: pick one")
    if args.port is not None and not args.broadcast:
        raise ConfigError("--port goes with --broadcast (a group carries its port: ADDR:PORT)")
    discovery = DiscoveryConfig(port=args.discovery_port, announce_interval=args.announce_interval)
    group = None
    if not args.broadcast and not args.unicast:
        group = net.parse_host_port(args.group or DEFAULT_GROUP, DEFAULT_PORT)
        for warning in net.check_group(group[0]):
            log.warning("%s", warning)
    unicast = tuple(net.parse_host_port(u, DEFAULT_PORT) for u in args.unicast)
    broadcast_port = None
    if args.broadcast:
        broadcast_port = DEFAULT_PORT if args.port is None else args.port
    if (args.encrypt or args.aead != "aes-128-gcm") and not args.key_file:
        raise ConfigError("--encrypt and --aead need --key-file")
    return SenderRunConfig(
        key_file=args.key_file,
        encrypt=args.encrypt,
        aead=args.aead,
        source=source,
        name=cli_util.name_option(args.name, "--name"),
        group=group,
        broadcast_port=broadcast_port,
        unicast=unicast,
        interface=args.interface,
        ttl=args.ttl,
        multicast_loop=not (args.no_multicast_loop or args.no_loop),
        mtu=args.mtu,
        fec=FecMode.parse(args.fec, scheme=FecMode.scheme_named(args.fec_scheme)),
        sndbuf=args.sndbuf,
        gso=not args.no_gso,
        max_rate=args.max_rate,
        spread=args.spread,
        heartbeat_interval=args.heartbeat_interval,
        discovery=discovery,
        status_json=args.status_json,
        metrics=_metrics_address(args.metrics) if args.metrics else None,
        list_devices=args.list_devices,
        debug=args.debug,
        quiet=args.quiet,
    )


def _metrics_address(text: str) -> tuple[str, int]:
    """``--metrics [ADDR:]PORT`` -> ``(address, port)``; the address defaults to loopback.

    Raises:
        ConfigError: no port.
    """
    raw = text.strip()
    if raw.isdigit() or raw.startswith(":"):
        raw = "127.0.0.1:" + raw.lstrip(":")
    host, port = net.parse_host_port(raw, 0)
    if port == 0:
        raise ConfigError(f"--metrics {text!r}: give a port, e.g. --metrics 9101")
    return host or "127.0.0.1", port


async def run(run_cfg: SenderRunConfig) -> int:
    """Open the source and the socket, then send until the source ends or we are stopped."""
    from mcastcam.sender.sources import open_source

    cli_util.setup_logging(run_cfg.debug, run_cfg.quiet)
    masters = load_master_keys(run_cfg.key_file)  # ConfigError (exit 2) before any socket
    if run_cfg.list_devices:
        from mcastcam.sender.sources.v4l2 import list_devices

        print(list_devices())
        return cli_util.EXIT_OK
    iface = net.resolve_interface(run_cfg.interface)
    if run_cfg.interface is None:
        log.info(
            "no --interface given: using %s (%s), the default route's", iface.name, iface.address
        )
    mtu = min(run_cfg.mtu or iface.mtu, 0xFFFF)
    src = run_cfg.source
    source = open_source(
        src.spec,
        size=src.size,
        fps=src.fps,
        loop=src.loop,
        fmt=src.fmt,
        quality=src.quality,
        subsampling=src.subsampling,
        controls=dict(src.controls),
    )
    try:
        ttl, group = run_cfg.ttl, run_cfg.group
        if group is not None:
            sock = net.open_multicast_sender(iface, ttl, run_cfg.multicast_loop, run_cfg.sndbuf)
            destinations = [group]
            transport = Transport.MULTICAST
            where = f"group {group[0]}:{group[1]} on {iface.name}, TTL {ttl}"
        elif run_cfg.broadcast_port is not None:
            sock = net.open_broadcast_sender(iface, run_cfg.sndbuf)
            assert iface.broadcast is not None
            destinations = [(iface.broadcast, run_cfg.broadcast_port)]
            transport = Transport.BROADCAST
            where = f"broadcast {iface.broadcast}:{destinations[0][1]} on {iface.name}"
        else:
            sock = net.open_unicast_sender(run_cfg.sndbuf)
            destinations = list(run_cfg.unicast)
            transport = Transport.UNICAST
            where = "unicast " + ", ".join(f"{h}:{p}" for h, p in destinations)
        with sock:
            gso = net.probe_gso(sock, run_cfg.gso)
            loop = asyncio.get_running_loop()
            cfg = SenderConfig(
                stream_id=secrets.randbits(32),
                name=run_cfg.name,
                host=iface.address,
                run_nonce=secrets.randbelow(0xFFFFFFFF) + 1,
                symbol_size=symbol_size_for_mtu(mtu, auth=bool(masters)),
                fec=run_cfg.fec,
                max_rate=run_cfg.max_rate,
                spread=run_cfg.spread,
                fps=source.fps,
                width=source.width,
                height=source.height,
                heartbeat_interval=run_cfg.heartbeat_interval,
                wall_offset_ns=wall_offset_ns(loop),
            )
            sealer = None
            if masters:
                aead = (
                    Aead.CHACHA20_POLY1305
                    if run_cfg.aead == "chacha20-poly1305"
                    else Aead.AES_128_GCM
                )
                sealer = Sealer(
                    masters[0], cfg.stream_id, cfg.run_nonce, aead=aead, encrypt=run_cfg.encrypt
                )
                log.info(
                    "authenticating every datagram with key id %d (%s%s)",
                    masters[0].key_id,
                    run_cfg.aead,
                    ", images encrypted" if run_cfg.encrypt else "",
                )
            session = SenderSession(cfg, loop.time(), seq=secrets.randbits(32), sealer=sealer)
            app = SenderApp(session, source, sock, destinations, max_frames=src.count, gso=gso)
            log.info(
                "sending stream %r (id %08x, run %08x) to %s, MTU %d (%d-byte symbols), fec %s, "
                "UDP GSO %s",
                cfg.name,
                cfg.stream_id,
                cfg.run_nonce,
                where,
                mtu,
                cfg.symbol_size,
                cfg.fec if cfg.fec.kind == "off" else f"{cfg.fec} ({cfg.fec.scheme_name})",
                gso.describe(),
            )
            group_addr, group_port = destinations[0]
            announce = DiscoveryAnnounce(
                stream_id=cfg.stream_id,
                seq=0,
                name=cfg.name,
                host=iface.address,
                transport=int(transport),
                group=group_addr if transport is not Transport.UNICAST else iface.address,
                port=group_port,
                width=source.width,
                height=source.height,
                fps_milli=round(source.fps * 1000),
                run_nonce=cfg.run_nonce,
            )
            discovery = await DiscoveryService.start(
                iface, announce, run_cfg.discovery, DiscoveryAuth(masters) if masters else None
            )
            metrics = await _start_metrics(app, run_cfg.metrics)
            status = asyncio.create_task(_status_loop(app, run_cfg.status_json, discovery))
            try:
                await app.run()
            finally:
                status.cancel()
                discovery.close()
                if metrics is not None:
                    await metrics.cleanup()
                line = app.status_text()
            cli_util.StatusLine.active = None
            log.info("done: %s", line)
    finally:
        source.close()
    return cli_util.EXIT_OK


async def _start_metrics(app: SenderApp, where: tuple[str, int] | None) -> web.AppRunner | None:
    """Serve ``/metrics`` of ``app`` on ``where`` (``None``: no server)."""
    if where is None:
        return None
    sender_metrics = SenderMetrics(
        lambda: {**app.status(), "bytes_sent": app.session.stats.bytes_sent}
    )
    runner = await start_metrics_server(sender_metrics.render, *where)
    log.info("serving Prometheus metrics on http://%s:%d/metrics", *runner.addresses[0][:2])
    return runner


async def _status_loop(app: SenderApp, json_path: str | None, discovery: DiscoveryService) -> None:
    line = cli_util.StatusLine(sys.stderr)
    src = app.source
    announced = (src.width, src.height, src.fps)
    while True:
        await asyncio.sleep(1.0)
        app.sync_source()  # a camera that went offline says so in the next heartbeat
        if (src.width, src.height, src.fps) != announced:  # e.g. a camera reopened
            announced = (src.width, src.height, src.fps)
            discovery.update(width=src.width, height=src.height, fps=src.fps)
        app.update_rates()
        line.update(app.status_text(), log)
        if json_path:
            write_json_atomically(json_path, app.status())


def write_json_atomically(path: str, data: object) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write --status-json %s: %s", path, exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mcastcam-send``; returns the exit status."""
    return cli_util.run_main(PROG, argv, parse, run, lambda o: o.debug)


if __name__ == "__main__":
    sys.exit(main())
