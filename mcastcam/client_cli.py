"""``mcastcam view URL`` and ``mcastcam dump URL --count N --out DIR``: clients of a receiver.

Both read a receiver's re-serve through :mod:`mcastcam.client` (``http://HOST:PORT/stream``
or ``tcp://HOST:PORT``), reconnecting while the receiver is away and saying what they wait
for. ``view`` prints, once a second, the frame rate, the latency (capture at the sender to
arrival here, by the two hosts' wall clocks: meaningful when they are synchronised) and the
bit rate. ``dump`` saves N frames as JPEG files ``frame-000000.jpg`` ... and says where.

Exit codes as the other commands (:mod:`mcastcam.cli_util`): 0 done, 1 a failure (e.g. the
folder cannot be written), 2 a bad option, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mcastcam import cli_util
from mcastcam.client import ClientFrame, aiter_frames

__all__ = ["ClientOptions", "Meter", "dump_main", "view_main"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """What ``view`` or ``dump`` was asked to do.

    Attributes:
        url: ``http://[user:password@]host:port/stream`` or ``tcp://host:port``.
        count: frames to read before exiting (``None``: until stopped; ``dump`` needs one).
        out: the folder ``dump`` writes into (created if missing).
        timeout: seconds allowed for connecting and for each read.
        reconnect: reconnect with backoff instead of failing on the first error.
        debug: tracebacks on errors.
    """

    url: str
    count: int | None
    out: Path | None
    timeout: float
    reconnect: bool
    debug: bool


class Meter:
    """Frames, bytes and latencies over one reporting interval.

    ``add`` each frame with the wall clock of its arrival (ns); ``line`` gives the report
    over the time since the previous one and starts a new interval.
    """

    def __init__(self, now: float) -> None:
        self._latencies: list[float] = []
        self._reset(now)

    def _reset(self, now: float) -> None:
        self._start = now
        self._frames = 0
        self._bytes = 0
        self._latencies.clear()

    def add(self, frame: ClientFrame, arrived_ns: int) -> None:
        """Count ``frame``, received at wall clock ``arrived_ns``."""
        self._frames += 1
        self._bytes += len(frame.jpeg)
        if frame.capture_ts_ns:
            self._latencies.append((arrived_ns - frame.capture_ts_ns) / 1e9)

    def line(self, now: float) -> str:
        """``"30.0 fps, latency 12.3 ms (median), 4.52 Mbit/s, 18.8 kB/frame"``; resets."""
        elapsed = max(now - self._start, 1e-9)
        fps = self._frames / elapsed
        latency = (
            f"latency {1000 * statistics.median(self._latencies):.1f} ms (median)"
            if self._latencies
            else "latency unknown (no capture times)"
        )
        per_frame = self._bytes / self._frames / 1000 if self._frames else 0.0
        text = (
            f"{fps:5.1f} fps, {latency}, {self._bytes * 8 / elapsed / 1e6:.2f} Mbit/s, "
            f"{per_frame:.1f} kB/frame"
        )
        self._reset(now)
        return text


def _parser(prog: str, description: str, dump: bool) -> cli_util.Parser:
    p = cli_util.Parser(prog=prog, description=description)
    p.add_argument("url", metavar="URL", help="http://HOST:PORT/stream or tcp://HOST:PORT")
    p.add_argument(
        "--count",
        type=int,
        metavar="N",
        required=dump,
        help="frames to save" if dump else "stop after N frames (default: until Ctrl-C)",
    )
    if dump:
        p.add_argument("--out", required=True, metavar="DIR", help="folder for the JPEG files")
    p.add_argument(
        "--timeout",
        type=cli_util.positive_float,
        default=10.0,
        metavar="S",
        help="seconds for connecting and for each read (default 10)",
    )
    p.add_argument(
        "--no-reconnect",
        action="store_true",
        help="fail on the first connection error instead of waiting for the receiver",
    )
    p.add_argument("--debug", action="store_true", help="debug logging; tracebacks on errors")
    return p


def _options(args: argparse.Namespace) -> ClientOptions:
    if args.count is not None and args.count < 1:
        raise cli_util.UsageError(f"--count {args.count}: must be at least 1")
    return ClientOptions(
        url=args.url,
        count=args.count,
        out=Path(args.out) if getattr(args, "out", None) else None,
        timeout=args.timeout,
        reconnect=not args.no_reconnect,
        debug=args.debug,
    )


def parse_view(argv: list[str]) -> ClientOptions:
    """``mcastcam view`` options; raises :class:`~mcastcam.cli_util.UsageError` (exit 2)."""
    return _options(
        _parser("mcastcam view", "Read a receiver's stream and print fps and latency once "
                "a second.", dump=False).parse_args(argv)
    )  # fmt: skip


def parse_dump(argv: list[str]) -> ClientOptions:
    """``mcastcam dump`` options; raises :class:`~mcastcam.cli_util.UsageError` (exit 2)."""
    return _options(
        _parser("mcastcam dump", "Save N frames of a receiver's stream as JPEG files.",
                dump=True).parse_args(argv)
    )  # fmt: skip


async def view(opts: ClientOptions) -> int:
    """Print a status line once a second until ``count`` frames or Ctrl-C."""
    cli_util.setup_logging(opts.debug, False)
    meter = Meter(time.monotonic())
    next_line = time.monotonic() + 1.0
    seen = 0
    async for frame in aiter_frames(
        opts.url, reconnect=opts.reconnect, timeout=opts.timeout, max_frames=opts.count
    ):
        meter.add(frame, time.time_ns())
        seen += 1
        now = time.monotonic()
        if now >= next_line:
            print(meter.line(now), flush=True)
            next_line = now + 1.0
    print(f"{seen} frames from {opts.url}", flush=True)
    return cli_util.EXIT_OK


async def dump(opts: ClientOptions) -> int:
    """Save ``count`` frames as ``DIR/frame-NNNNNN.jpg``.

    Raises:
        OSError: the folder cannot be made or written (exit 1).
    """
    cli_util.setup_logging(opts.debug, False)
    assert opts.out is not None and opts.count is not None
    opts.out.mkdir(parents=True, exist_ok=True)
    saved = 0
    async for frame in aiter_frames(
        opts.url, reconnect=opts.reconnect, timeout=opts.timeout, max_frames=opts.count
    ):
        (opts.out / f"frame-{saved:06d}.jpg").write_bytes(frame.jpeg)
        saved += 1
    print(f"saved {saved} frames to {opts.out}", flush=True)
    return cli_util.EXIT_OK if saved == opts.count else cli_util.EXIT_FAILURE


def view_main(argv: list[str] | None = None) -> int:
    """``mcastcam view``; returns the exit status."""
    return cli_util.run_main("mcastcam view", argv, parse_view, view, lambda o: o.debug)


def dump_main(argv: list[str] | None = None) -> int:
    """``mcastcam dump``; returns the exit status."""
    return cli_util.run_main("mcastcam dump", argv, parse_dump, dump, lambda o: o.debug)


if __name__ == "__main__":
    sys.exit(view_main())
