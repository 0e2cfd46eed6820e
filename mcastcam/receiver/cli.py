"""``mcastcam-recv``: join the group, reassemble frames, re-serve them over HTTP and TCP.

Run ``mcastcam-recv --help`` for every option with examples.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import secrets
import sys
from collections.abc import Callable
from typing import TypeVar

from mcastcam import cli_util, net
from mcastcam.discovery.query import discover
from mcastcam.errors import ConfigError
from mcastcam.keys import add_key_file_option, load_master_keys
from mcastcam.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mcastcam.metrics import ReceiverMetrics
from mcastcam.protocol import integrity
from mcastcam.protocol.config import (
    DEFAULT_DISCOVERY_PORT,
    DEFAULT_DISCOVERY_TIMEOUT,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_GROUP,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_PORT,
    DEFAULT_RCVBUF,
    ReceiverConfig,
)
from mcastcam.protocol.rates import RateMeter
from mcastcam.protocol.reassembly import ReassemblyLimits
from mcastcam.protocol.receiver import ReceiverSession
from mcastcam.protocol.recording import (
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_SECONDS,
    RecordLimits,
    parse_bytes,
    parse_seconds,
)
from mcastcam.protocol.reports import Reporter
from mcastcam.protocol.trust import DiscoveryAuth, Verifier
from mcastcam.protocol.wire import Transport
from mcastcam.receiver.app import ReceiverApp
from mcastcam.receiver.fanout import FrameHub
from mcastcam.receiver.nosignal import no_signal_jpeg
from mcastcam.receiver.ops import (
    LossWindow,
    clamp_max_clients,
    fd_budget,
    install_accept_error_handler,
    load_tls,
    raise_fd_limit,
)
from mcastcam.receiver.publish import Publisher, check_publish_url
from mcastcam.receiver.recorder import Recorder
from mcastcam.receiver.senders import SenderWatch

__all__ = ["DEFAULT_RCVBUF", "build_parser", "main", "parse", "run", "status_text"]

log = logging.getLogger("mcastcam.recv")
T = TypeVar("T")

PROG = "mcastcam-recv"
STATUS_INTERVAL = 1.0
"""Seconds between two status lines (and the window of their frame rate)."""

EXAMPLES = """\
examples:
  mcastcam-recv --http 8080                 find a sender on the LAN, open http://HOST:8080/
  mcastcam-recv --name kitchen --http 8080  find the sender named 'kitchen' and follow it
  mcastcam-recv --group 239.255.10.1:5004 --interface eth0 --http 127.0.0.1:8080
  mcastcam-recv --interface lo --http 8080 --tcp 9000   also raw TCP frames on port 9000
  mcastcam-recv --broadcast --port 8989 --interface wlan0
  mcastcam-recv --unicast-port 8989         for senders using --unicast
  mcastcam-recv --group 239.255.0.1:8989 --stream 0x1a2b3c4d   one stream of a shared group
  mcastcam-recv --auth viewer:secret --cors https://example.org
  mcastcam-recv --http 8080 --publish rtmp://media.example.org/live/cam1   also push H.264
  mcastcam-recv --http 8443 --tls-cert cert.pem --tls-key key.pem   HTTPS
  mcastcam-recv --record /srv/cam --record-segment 10m --record-keep 50G   also record
  mcastcam-recv --config /etc/mcastcam/recv.toml   the same options from a TOML file

HTTP routes (mjpg-streamer compatible):
  /stream, /?action=stream      multipart MJPEG (browsers, ffmpeg, VLC, OpenCV, OctoPrint)
  /snapshot, /?action=snapshot  the latest JPEG (?fresh=1&timeout=S waits for a newer one)
  aliases: /stream.mjpg, /video.mjpg, /?action=stream_0; /snapshot.jpg, /?action=snapshot_0
  /status                       JSON: state (live, no_frames, stale, offline), streams,
                                liveness, counters, clients
  /senders                      JSON: the senders discovery finds on the LAN (the picker)
  /metrics                      Prometheus metrics (frames, datagrams, loss, repair, latency)
  /                             a page: live image, state, numbers with history, URLs, senders

recording (--record DIR): segments mcastcam-YYYYmmdd-HHMMSSZ-NNNN.mjpeg (JPEGs as received;
  play one with mcastcam-send --source SEGMENT) and an index NAME.jsonl (offset, length,
  capture_ts_ns, frame_id per frame); never below the free-space floor (then it stops, says
  so in the log and /status, and resumes when space is back)
"""


def build_parser() -> cli_util.Parser:
    """The argument parser."""
    p = cli_util.Parser(
        prog=PROG,
        config_file=True,
        description="Receive mcastcam frames from a multicast group (or broadcast/unicast), "
        "reassemble them and re-serve them over HTTP (multipart MJPEG) and TCP.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rx = p.add_argument_group("receive")
    rx.add_argument(
        "--group",
        metavar="ADDR:PORT",
        help="multicast group and UDP port to join (default: the group of a sender found by "
        f"broadcast discovery, else {DEFAULT_GROUP})",
    )
    rx.add_argument(
        "--interface",
        metavar="NAME",
        help="interface to join on, e.g. eth0 (default: the default route's)",
    )
    rx.add_argument(
        "--broadcast",
        action="store_true",
        help="receive subnet broadcasts on the interface instead of a group",
    )
    rx.add_argument("--port", type=int, help=f"UDP port with --broadcast (default {DEFAULT_PORT})")
    rx.add_argument(
        "--unicast-port",
        type=int,
        metavar="PORT",
        help="receive datagrams sent straight to this host on PORT (sender --unicast)",
    )
    rx.add_argument(
        "--rcvbuf",
        type=int,
        metavar="BYTES",
        default=DEFAULT_RCVBUF,
        help=f"SO_RCVBUF size (default {DEFAULT_RCVBUF >> 20} MiB; the kernel caps it at "
        "net.core.rmem_max)",
    )
    rx.add_argument(
        "--no-gro",
        action="store_true",
        help="never ask for UDP GRO (coalesced datagrams, Linux >= 5.0) on the socket",
    )
    add_key_file_option(rx)
    rx.add_argument(
        "--stream",
        metavar="NAME|ID",
        help="follow the stream with this name or id (0x1234abcd); default: the first heard",
    )
    rx.add_argument(
        "--frame-timeout",
        type=cli_util.positive_float,
        default=DEFAULT_FRAME_TIMEOUT,
        metavar="S",
        help="seconds an incomplete frame may wait for its fragments "
        f"(default {DEFAULT_FRAME_TIMEOUT:g})",
    )
    rx.add_argument(
        "--max-frame-size",
        type=int,
        default=DEFAULT_MAX_FRAME_SIZE,
        metavar="BYTES",
        help=f"largest frame accepted (default {DEFAULT_MAX_FRAME_SIZE >> 20} MiB); larger ones "
        "are refused before allocation",
    )
    rx.add_argument(
        "--name",
        metavar="NAME",
        help="follow the sender whose stream is named NAME (with discovery, ask only "
        "for it); without --group, --broadcast or --unicast-port the group is "
        "found by broadcast discovery",
    )
    rx.add_argument(
        "--discovery-port",
        type=int,
        default=DEFAULT_DISCOVERY_PORT,
        metavar="PORT",
        help=f"senders' discovery UDP port (default {DEFAULT_DISCOVERY_PORT})",
    )
    rx.add_argument(
        "--discovery-timeout",
        type=cli_util.positive_float,
        default=DEFAULT_DISCOVERY_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for discovery answers (default {DEFAULT_DISCOVERY_TIMEOUT:g})",
    )
    rx.add_argument(
        "--receiver-name", help="this receiver's name in its reports (default: host name)"
    )
    rx.add_argument(
        "--no-reports",
        action="store_true",
        help="do not send receiver reports (loss, RTT) to the sender",
    )
    rx.add_argument(
        "--no-nack",
        action="store_true",
        help="do not ask the sender for repair of frames FEC could not finish (NACKs)",
    )
    rx.add_argument(
        "--liveness-timeout",
        type=cli_util.positive_float,
        metavar="S",
        help="seconds of silence before a sender is lost (default 3 heartbeat intervals)",
    )
    sv = p.add_argument_group("serve")
    sv.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help=f"serve HTTP here (default 0.0.0.0:{DEFAULT_HTTP_PORT} unless only --tcp is given)",
    )
    sv.add_argument(
        "--tcp",
        metavar="[HOST:]PORT",
        help="serve raw TCP frames here (header + JPEG; see docs/protocol.md)",
    )
    sv.add_argument(
        "--max-clients",
        type=int,
        default=DEFAULT_MAX_CLIENTS,
        help=f"stream clients at once, HTTP and TCP together (default {DEFAULT_MAX_CLIENTS}); "
        "more get 503",
    )
    sv.add_argument("--auth", metavar="USER:PASSWORD", help="require HTTP Basic authentication")
    sv.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS: PEM certificate (chain)")
    sv.add_argument("--tls-key", metavar="FILE", help="serve HTTPS: the certificate's PEM key")
    sv.add_argument(
        "--max-frame-age",
        type=cli_util.positive_float,
        metavar="S",
        help="/snapshot answers 503 when the newest frame is older than S seconds (default: "
        "max(1, 5 / fps, 3 heartbeat intervals))",
    )
    sv.add_argument(
        "--cors",
        metavar="ORIGIN",
        help="send Access-Control-Allow-Origin: ORIGIN (default: no CORS header)",
    )
    sv.add_argument(
        "--publish",
        metavar="rtmp://HOST/APP/NAME",
        help="also push the stream to an RTMP server (nginx-rtmp, ...) as H.264, encoded by "
        "ffmpeg (restarted with back-off when it exits); see docs/scaling.md",
    )
    sv.add_argument(
        "--no-signal-frame",
        choices=("on", "off"),
        default="on",
        help="while no fresh frame is there, /stream sends browsers (and clients asking "
        "/stream?no_signal=1) a 'no signal' JPEG once a second, and /snapshot's 503 carries it "
        "for them (default on; players sending Accept: */* get only real frames)",
    )
    rec = p.add_argument_group("record")
    rec.add_argument("--record", metavar="DIR", help="write the received frames to .mjpeg "
                     "segments in DIR (see below)")  # fmt: skip
    rec.add_argument(
        "--record-segment", type=_option(parse_seconds), metavar="DURATION",
        default=DEFAULT_SEGMENT_SECONDS,
        help=f"start a new segment after DURATION (90, 90s, 10m, 1h; default "
        f"{DEFAULT_SEGMENT_SECONDS:g}s)",
    )  # fmt: skip
    rec.add_argument(
        "--record-max-bytes", type=_option(parse_bytes), metavar="SIZE",
        default=DEFAULT_SEGMENT_BYTES,
        help=f"... or before a segment grows past SIZE (default {DEFAULT_SEGMENT_BYTES >> 20}M)",
    )  # fmt: skip
    rec.add_argument(
        "--record-keep", metavar="N|SIZE",
        help="keep the newest N segments, or (with a unit: 500M, 20G) at most SIZE of them; "
        "older ones are deleted (default: keep all, until the free-space floor)",
    )  # fmt: skip
    rec.add_argument(
        "--record-min-free", metavar="SIZE|PCT%",
        help="stop recording rather than leave less than SIZE (or PCT%% of the file system) "
        "free (default: the smaller of 5%% and 1G)",
    )  # fmt: skip
    out = p.add_argument_group("output")
    out.add_argument("--debug", action="store_true", help="debug logging; tracebacks on errors")
    out.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return p


def _listen_address(text: str, flag: str) -> tuple[str, int]:
    raw = text.strip()
    if raw.isdigit() or raw.startswith(":"):
        raw = "0.0.0.0:" + raw.lstrip(":")
    host, port = net.parse_host_port(raw, 0)
    if port == 0:
        raise ConfigError(
            f"{flag} {text!r}: give a port, e.g. {flag} 8080 or {flag} 127.0.0.1:8080"
        )
    return host or "0.0.0.0", port


def _option(parse_fn: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` turning ``ValueError`` into a usage error."""

    def convert(text: str) -> T:
        try:
            return parse_fn(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value {text!r}") from None

    convert.__name__ = parse_fn.__name__
    return convert


def _record_limits(args: argparse.Namespace) -> RecordLimits:
    keep_segments = keep_bytes = min_free_bytes = None
    min_free_percent = None
    try:
        if args.record_keep is not None:
            if args.record_keep.strip().isdigit():
                keep_segments = int(args.record_keep)
            else:
                keep_bytes = parse_bytes(args.record_keep)
        if args.record_min_free is not None:
            text = args.record_min_free.strip()
            if text.endswith("%"):
                min_free_percent = float(text[:-1])
            else:
                min_free_bytes = parse_bytes(text)
    except ValueError as exc:
        raise ConfigError(f"--record-keep/--record-min-free: {exc}") from None
    return RecordLimits(
        segment_seconds=args.record_segment,
        segment_bytes=args.record_max_bytes,
        keep_segments=keep_segments,
        keep_bytes=keep_bytes,
        min_free_bytes=min_free_bytes,
        min_free_percent=min_free_percent,
    )


def parse(argv: list[str]) -> ReceiverConfig:
    """Parse and validate ``argv`` into a :class:`ReceiverConfig`.

    Raises:
        cli_util.UsageError, ConfigError: a bad value (exit 2).
    """
    args = build_parser().parse_args(argv)
    group = None
    if args.group is not None:
        group = net.parse_host_port(args.group, DEFAULT_PORT)
        for warning in net.check_group(group[0]):
            log.warning("%s", warning)
    http = _listen_address(args.http, "--http") if args.http else None
    tcp = _listen_address(args.tcp, "--tcp") if args.tcp else None
    if http is None and tcp is None:
        http = ("0.0.0.0", DEFAULT_HTTP_PORT)
    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--auth: expected USER:PASSWORD")
        auth = (user, password)
    return ReceiverConfig(
        group=group,
        broadcast=args.broadcast,
        broadcast_port=args.port,
        unicast_port=args.unicast_port,
        interface=args.interface,
        rcvbuf=args.rcvbuf,
        gro=not args.no_gro,
        stream=args.stream,
        name=args.name,
        frame_timeout=args.frame_timeout,
        max_frame_size=args.max_frame_size,
        discovery_port=args.discovery_port,
        discovery_timeout=args.discovery_timeout,
        receiver_name=cli_util.name_option(args.receiver_name, "--receiver-name"),
        reports=not args.no_reports,
        nack=not args.no_nack,
        liveness_timeout=args.liveness_timeout,
        http=http,
        tcp=tcp,
        max_clients=args.max_clients,
        auth=auth,
        cors=args.cors,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_frame_age=args.max_frame_age,
        publish=check_publish_url(args.publish) if args.publish else None,
        record=args.record,
        record_limits=_record_limits(args),
        no_signal=args.no_signal_frame == "on",
        key_file=args.key_file,
        debug=args.debug,
        quiet=args.quiet,
    )


async def run(cfg: ReceiverConfig) -> int:
    """Join, serve, and run until stopped."""
    from mcastcam.receiver.http import start_http
    from mcastcam.receiver.tcp import start_tcp

    cli_util.setup_logging(cfg.debug, cfg.quiet)
    masters = load_master_keys(cfg.key_file)  # ConfigError (exit 2) before any socket
    install_accept_error_handler(asyncio.get_running_loop())
    tls = load_tls(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
    fd_limit, _hard = raise_fd_limit()
    max_clients = clamp_max_clients(cfg.max_clients, fd_limit)
    if integrity.IMPLEMENTATION != "c":
        log.warning(
            "google-crc32c runs its pure-Python fallback (%s): every frame's CRC-32C check "
            "is slow; reinstall google-crc32c with its C extension",
            integrity.IMPLEMENTATION,
        )
    iface = net.resolve_interface(cfg.interface)
    if cfg.interface is None:
        log.info(
            "no --interface given: using %s (%s), the default route's", iface.name, iface.address
        )
    group, broadcast_port = cfg.group, cfg.broadcast_port if cfg.broadcast else None
    warnings: list[str] = []
    if group is None and not cfg.broadcast and cfg.unicast_port is None:
        auth = DiscoveryAuth(masters) if masters else None
        group, broadcast_port = await _discover_group(iface, cfg, warnings, auth)
    if group is not None:
        sock = net.open_multicast_receiver(group[0], group[1], iface, cfg.rcvbuf)
        where = f"group {group[0]}:{group[1]} on {iface.name} ({iface.address})"
    elif broadcast_port is not None or cfg.broadcast:
        port = broadcast_port or DEFAULT_PORT
        sock = net.open_broadcast_receiver(port, iface, cfg.rcvbuf)
        where = f"broadcast port {port} on {iface.name}"
    else:
        assert cfg.unicast_port is not None
        sock = net.open_unicast_receiver("", cfg.unicast_port, cfg.rcvbuf)
        where = f"unicast port {cfg.unicast_port}"
    limits = ReassemblyLimits(
        max_frame_len=cfg.max_frame_size,
        max_bytes_in_flight=max(32 << 20, 2 * cfg.max_frame_size),
        frame_timeout=cfg.frame_timeout,
    )
    report_sock = None
    reporter = None
    if masters and not cfg.reports:
        raise ConfigError(
            "--key-file needs receiver reports (the freshness check asks the sender): "
            "drop --no-reports"
        )
    if cfg.reports:
        report_sock = net.open_unicast_sender()
        host = iface.address if iface is not None else "0.0.0.0"
        reporter = Reporter(secrets.randbits(32), cfg.receiver_name, host, random.random)
    session = ReceiverSession(
        limits,
        stream=cfg.stream or cfg.name,
        liveness_timeout=cfg.liveness_timeout,
        reporter=reporter,
        nack=cfg.nack,
        rng=random.random,
        verifier=Verifier(masters) if masters else None,
        token=lambda: secrets.randbits(64) or 1,
    )
    if masters:
        log.info(
            "key file %s: accepting datagrams under key id %s only",
            cfg.key_file,
            ", ".join(str(m.key_id) for m in masters),
        )
    # ffmpeg (--publish) and the recorder are subscribers whose slots are not --max-clients'
    extra = (cfg.publish is not None) + (cfg.record is not None)
    hub = FrameHub(max_clients=max_clients + extra)
    app = ReceiverApp(session, hub, report_sock)
    recorder = Recorder(hub, cfg.record, cfg.record_limits) if cfg.record is not None else None
    watch = SenderWatch(iface, cfg.discovery_port, DiscoveryAuth(masters) if masters else None)
    publisher = None
    if cfg.publish is not None:
        publisher = Publisher(hub, cfg.publish, fps=lambda: _followed_fps(app))
    servers: list[object] = []
    try:
        gro = net.enable_gro(sock, cfg.gro)
        await app.attach(sock, gro)
        log.info("receiving %s, UDP GRO %s", where, gro.describe())

        def status() -> dict[str, object]:
            out = app.status()
            out["receiving"] = where
            out["warnings"] = warnings
            if publisher is not None:
                out["publish"] = publisher.status()
            if recorder is not None:
                out["recording"] = recorder.status()
            return out

        def stream_name(sid: int) -> str:
            info = session.info.get(sid)
            return info.name if info is not None else ""

        metrics = ReceiverMetrics(lambda: {**status(), **hub.stats()}, stream_name)
        metrics.attach(hub)

        if cfg.http is not None:
            http = await start_http(
                hub, cfg.http[0], cfg.http[1], status=status, auth=cfg.auth, cors=cfg.cors,
                ssl_context=tls, max_connections=fd_budget(fd_limit),
                max_frame_age=cfg.max_frame_age,
                no_signal=no_signal_jpeg() if cfg.no_signal else None, senders=watch,
                metrics=lambda: (metrics.render(), METRICS_CONTENT_TYPE),
            )  # fmt: skip
            servers.append(http)
            shown = "127.0.0.1" if cfg.http[0] == "0.0.0.0" else cfg.http[0]
            scheme = "https" if tls is not None else "http"
            log.info(
                "serving %s: open %s://%s:%d/ (stream: /stream)",
                scheme.upper(), scheme, shown, http.port,
            )  # fmt: skip
        if cfg.tcp is not None:
            tcp = await start_tcp(hub, cfg.tcp[0], cfg.tcp[1])
            servers.append(tcp)
            log.info("serving raw TCP frames on %s:%d", cfg.tcp[0], tcp.port)
        if publisher is not None:
            publisher.start()
        if recorder is not None:
            recorder.start()
        watch.start()
        await _status_loop(app, hub)
    finally:
        cli_util.StatusLine.active = None
        await watch.close()
        if recorder is not None:
            await recorder.close()
        if publisher is not None:
            await publisher.close()
        for server in reversed(servers):
            await server.close()  # type: ignore[attr-defined]
        app.close()
        sock.close()
        if report_sock is not None:
            report_sock.close()
    return cli_util.EXIT_OK


def _followed_fps(app: ReceiverApp) -> float:
    """The followed stream's frame rate from its heartbeats (frames/s; 0 when unknown)."""
    followed = next((s for s in app.status()["streams"] if s["followed"]), None)
    return float(followed["fps"]) if followed is not None else 0.0


async def _discover_group(
    iface: net.Interface,
    cfg: ReceiverConfig,
    warnings: list[str],
    auth: DiscoveryAuth | None = None,
) -> tuple[tuple[str, int] | None, int | None]:
    """No group given: ask the LAN (broadcast discovery) and pick a sender.

    Returns ``(group, None)`` for a multicast sender, ``(None, port)`` for a broadcast one;
    the default group when discovery is impossible (no broadcast address) or finds nothing:
    then a WARNING is logged and appended to ``warnings`` (shown in ``/status``). With
    ``auth`` (a key) only tagged answers to this query count, never unsolicited announces.
    """
    default = net.parse_host_port(DEFAULT_GROUP, DEFAULT_PORT)
    if iface.broadcast is None:
        warnings.append(
            f"no --group given and {iface.name} cannot broadcast a discovery query: joined "
            f"the default group {DEFAULT_GROUP}; give --group ADDR:PORT"
        )
        log.warning("%s", warnings[-1])
        return default, None
    found = await discover(
        iface,
        port=cfg.discovery_port,
        timeout=cfg.discovery_timeout,
        name=cfg.name,
        max_found=1 if cfg.name else None,
        auth=auth,
        answers_only=auth is not None,
    )
    found = [f for f in found if f.transport is not Transport.UNICAST]
    if not found:
        named = f" named {cfg.name!r}" if cfg.name else ""
        warnings.append(
            f"no --group given and no sender{named} answered discovery on {iface.name} within "
            f"{cfg.discovery_timeout:g} s: joined the default group {DEFAULT_GROUP}; give "
            "--group ADDR:PORT"
        )
        log.warning("%s", warnings[-1])
        return default, None
    if len(found) > 1:
        log.info("found %d senders: %s", len(found), "; ".join(f.describe() for f in found))
        log.info("following the first, %r (pick another with --name)", found[0].name)
    chosen = found[0]
    log.info("discovered %s", chosen.describe())
    if chosen.transport is Transport.BROADCAST:
        return None, chosen.port
    return (chosen.group, chosen.port), None


def status_text(
    app: ReceiverApp, hub: FrameHub, rates: dict[int, tuple[RateMeter, LossWindow]]
) -> str:
    """One line: followed stream, liveness, fps, recent loss %, repaired/lost, clients.

    ``rates`` keeps one frame-rate meter and one loss window between calls, for the followed
    stream id only (bounded: another followed stream replaces them). The fps shown is the
    frames completed per second since the previous line; the loss is datagrams lost over
    :data:`~mcastcam.receiver.ops.LOSS_WINDOW` seconds, not since start.
    """
    st = app.status()
    followed = next((s for s in st["streams"] if s["followed"]), None)
    if followed is None:
        return f"waiting for a sender | clients {len(hub)}"
    now = asyncio.get_running_loop().time()
    sid, completed = followed["stream_id_int"], followed["frames_completed"]
    meters = rates.get(sid)
    if meters is None:
        rates.clear()
        meters = rates[sid] = (
            RateMeter(STATUS_INTERVAL, now, completed),
            LossWindow(now, followed["datagrams"], followed["lost"]),
        )
    meter, window = meters
    meter.observe(now, completed)
    window.observe(now, followed["datagrams"], followed["lost"])
    fps = meter.rate(now)
    loss = window.percent(now)
    dropped = sum(followed["frames_dropped"].values())
    repaired = followed["repaired_fec"] + followed["repaired_nack"]
    corrupt = f", corrupt {followed['corrupt']}" if followed["corrupt"] else ""
    return (
        f"{followed['name'] or followed['stream_id']} {followed['liveness']} | "
        f"{fps:4.1f} fps, loss {loss:.2f} %, repaired {repaired} "
        f"(fec {followed['repaired_fec']}, nack {followed['repaired_nack']}), "
        f"dropped {dropped} (unrepairable {followed['unrepairable']}){corrupt} | "
        f"clients {len(hub)}"
    )


async def _status_loop(app: ReceiverApp, hub: FrameHub) -> None:
    line = cli_util.StatusLine(sys.stderr)
    rates: dict[int, tuple[RateMeter, LossWindow]] = {}
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        app.log_refusals()
        line.update(status_text(app, hub, rates), log)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mcastcam-recv``; returns the exit status."""
    return cli_util.run_main(PROG, argv, parse, run, lambda c: c.debug)


if __name__ == "__main__":
    sys.exit(main())
