"""``mcastcam-send`` end to end, in-process: the real CLI entry point, real loopback sockets.

Each run calls :func:`mcastcam.sender.cli.main` in a worker thread (signal handlers are
skipped off the main thread) while the test thread drains a raw socket that joined a group in
239.255.0.0/16 on ``lo`` (or a bound unicast socket on 127.0.0.1). Multicast is pinned to
``lo`` with TTL 0. The captured datagrams go through the receiver's pure
:class:`~mcastcam.protocol.reassembly.Reassembler`; frames must come out byte-identical to the
source frames, in order.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import netifaces
import pytest
import simplejpeg

from mcastcam import net
from mcastcam.protocol import codec
from mcastcam.protocol.codec import Heartbeat
from mcastcam.protocol.events import ControlReceived, FrameCompleted, FrameDropped
from mcastcam.protocol.fec import repair_capacity
from mcastcam.protocol.reassembly import Reassembler
from mcastcam.protocol.wire import Kind, SourceState
from mcastcam.sender import cli
from tests.conftest import DataFiles, naive_split

from .fake_v4l2 import FakeCamera

pytestmark = pytest.mark.multicast

RCVBUF = 4 << 20
_GROUPS = itertools.count(1)
SAMPLE = resources.files("mcastcam") / "data" / "sample_webcam_640x480.mjpeg"
BASE = ["--interface", "lo", "--ttl", "0", "--heartbeat-interval", "0.2"]


def _group() -> str:
    """A fresh group in 239.255.77.0/24 for each run (no cross-talk between tests)."""
    return f"239.255.77.{next(_GROUPS) % 250 + 2}"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI installs a root handler on the captured stderr; take it away afterwards."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_mcastcam", False):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def lo() -> net.Interface:
    return net.resolve_interface("lo")


@contextlib.contextmanager
def multicast_receiver(lo: net.Interface) -> Iterator[tuple[socket.socket, str]]:
    """A raw socket that joined a fresh group on ``lo``; yields ``(sock, "group:port")``."""
    group = _group()
    sock = net.open_multicast_receiver(group, 0, lo, RCVBUF)
    try:
        yield sock, f"{group}:{sock.getsockname()[1]}"
    finally:
        sock.close()


@dataclass
class Run:
    """One in-process CLI run and what the test socket captured (payload, arrival time)."""

    code: int
    datagrams: list[tuple[bytes, float]]


def run_cli(
    argv: list[str],
    sock: socket.socket | None = None,
    *,
    tick: Callable[[], None] | None = None,
    limit_s: float = 40.0,
) -> Run:
    """Run ``cli.main(argv)`` in a thread, draining ``sock`` until it returns (bounded)."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["code"] = cli.main(argv)
        except SystemExit as exc:  # argparse's --help
            result["code"] = exc.code
        except BaseException as exc:
            result["error"] = exc

    datagrams: list[tuple[bytes, float]] = []
    worker = threading.Thread(target=target, name="mcastcam-send", daemon=True)
    worker.start()
    deadline = time.monotonic() + limit_s
    with selectors.DefaultSelector() as sel:
        if sock is not None:
            sel.register(sock, selectors.EVENT_READ)
        drained_after_end = False
        while not drained_after_end:
            ended = not worker.is_alive()  # loopback delivery is synchronous: drain once more
            if tick is not None and not ended:
                tick()
            if sock is None:
                worker.join(0.01)
            elif sel.select(0.01):
                while True:
                    try:
                        data, _ = sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    datagrams.append((data, time.monotonic()))
            drained_after_end = ended
            if time.monotonic() > deadline:
                pytest.fail(f"mcastcam-send {argv} still running after {limit_s} s")
    worker.join(5)
    if "error" in result:
        raise AssertionError(f"main raised instead of returning an exit code: {result['error']!r}")
    code = result["code"]
    assert isinstance(code, int)
    return Run(code, datagrams)


@dataclass
class Reassembled:
    frames: list[bytes] = field(default_factory=list)
    frame_ids: list[int] = field(default_factory=list)
    stream_ids: set[int] = field(default_factory=set)
    dropped: list[FrameDropped] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)


def reassemble(datagrams: list[tuple[bytes, float]]) -> Reassembled:
    """Feed every captured datagram to a fresh :class:`Reassembler` at its arrival time."""
    r = Reassembler()
    out = Reassembled()
    for data, at in datagrams:
        r.receive_datagram(data, ("127.0.0.1", 9), at)
        while (ev := r.next_event()) is not None:
            if isinstance(ev, FrameCompleted):
                out.frames.append(bytes(ev.frame.jpeg))
                out.frame_ids.append(ev.frame.frame_id)
                out.stream_ids.add(ev.frame.stream_id)
            elif isinstance(ev, FrameDropped):
                out.dropped.append(ev)
            elif isinstance(ev, ControlReceived) and isinstance(ev.message, Heartbeat):
                out.heartbeats.append(ev.message)
    assert not r.decode_errors, r.decode_errors
    return out


def assert_frames(got: Reassembled, expected: list[bytes]) -> None:
    assert got.dropped == []
    assert len(got.stream_ids) == 1
    assert len(got.frames) == len(expected)
    for i, (a, b) in enumerate(zip(got.frames, expected, strict=True)):
        assert a == b, f"frame {i} differs ({len(a)} vs {len(b)} bytes)"
    first = got.frame_ids[0]
    assert got.frame_ids == [(first + k) & 0xFFFFFFFF for k in range(len(expected))]


def fragment_counts(datagrams: list[tuple[bytes, float]]) -> list[int]:
    """Number of source symbol datagrams per frame id, in frame-id order."""
    per: dict[int, int] = {}
    for data, _ in datagrams:
        msg = codec.decode(data)
        if isinstance(msg, codec.Symbol) and msg.kind == Kind.SOURCE:
            per[msg.frame_id] = per.get(msg.frame_id, 0) + 1
    return [per[k] for k in sorted(per)]


# ---------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("name", "count"), [("webcam_640x480_420.mjpeg", 40), ("synthetic_1280x720_422.mjpeg", 30)]
)
def test_mjpeg_recording_arrives_byte_identical(
    data_files: DataFiles, lo: net.Interface, name: str, count: int
) -> None:
    path = data_files / name
    expected = naive_split(path.read_bytes())[:count]
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                str(path),
                "--group",
                group,
                *BASE,
                "--mtu",
                "1500",
                "--fps",
                "200",
                "--count",
                str(count),
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    got = reassemble(run.datagrams)
    assert_frames(got, expected)
    counts = fragment_counts(run.datagrams)
    assert min(counts) >= 4  # many source symbols per frame at a 1500-byte MTU
    assert all(len(d) <= 1500 - 28 for d, _ in run.datagrams)


def test_jpeg_folder_plays_in_name_order(
    data_files: DataFiles, tmp_path: Path, lo: net.Interface
) -> None:
    frames = naive_split((data_files / "synthetic_160x120_420.mjpeg").read_bytes())[:6]
    for i, jpeg in enumerate(frames):
        (tmp_path / f"frame{i:03d}.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not a frame")
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                str(tmp_path),
                "--group",
                group,
                *BASE,
                "--mtu",
                "1500",
                "--fps",
                "100",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0  # a folder played once ends by itself
    got = reassemble(run.datagrams)
    assert_frames(got, frames)
    assert got.heartbeats[-1].source_state == SourceState.ENDED


def test_bundled_sample(lo: net.Interface) -> None:
    expected = naive_split(SAMPLE.read_bytes())[:12]
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                "sample",
                "--group",
                group,
                *BASE,
                "--mtu",
                "1500",
                "--fps",
                "120",
                "--count",
                "12",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    assert_frames(reassemble(run.datagrams), expected)


def test_testpattern_frames_decode_at_the_asked_size(lo: net.Interface) -> None:
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                "testpattern",
                "--size",
                "320x240",
                "--group",
                group,
                *BASE,
                "--mtu",
                "1500",
                "--fps",
                "60",
                "--count",
                "5",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    got = reassemble(run.datagrams)
    assert got.dropped == []
    assert len(got.frames) == 5
    assert len(set(got.frames)) == 5  # the moving bar and the frame number change
    for jpeg in got.frames:
        height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
        assert (width, height) == (320, 240)
        assert simplejpeg.decode_jpeg(jpeg).shape == (240, 320, 3)
    assert got.heartbeats[0].width == 320 and got.heartbeats[0].height == 240


def test_v4l2_camera_through_the_cli(data_files: DataFiles, lo: net.Interface) -> None:
    frames = naive_split((data_files / "webcam_640x480_420.mjpeg").read_bytes())[:20]
    dev = Path("/dev/video42")
    count = 5
    with FakeCamera(dev, frames, formats=("YUYV", "MJPG"), padding=100) as cam:
        last_push = [0.0]

        def tick() -> None:
            # the sensor delivers a frame once the previous one was dequeued, ~30 fps
            now = time.monotonic()
            due = cam.streaming and not cam._done and now - last_push[0] > 0.03
            if due and cam.frames_pushed < count + 5 and cam.push():
                last_push[0] = now

        with multicast_receiver(lo) as (sock, group):
            run = run_cli(
                [
                    "--source",
                    f"v4l2:{dev}",
                    "--group",
                    group,
                    *BASE,
                    "--mtu",
                    "1500",
                    "--count",
                    str(count),
                    "--control",
                    "brightness=140",
                    "--quiet",
                ],
                sock,
                tick=tick,
            )
        assert cam.controls[0].value == 140
        assert not cam.streaming  # the CLI stopped the device on the way out
    assert run.code == 0
    got = reassemble(run.datagrams)
    assert_frames(got, frames[:count])  # MJPEG path: padding after EOI trimmed
    assert (got.heartbeats[0].width, got.heartbeats[0].height) == (640, 480)
    assert got.heartbeats[-1].source_state == SourceState.ENDED


def test_unplugged_camera_is_reported_offline_in_heartbeats_then_comes_back(
    data_files: DataFiles, lo: net.Interface
) -> None:
    frames = naive_split((data_files / "webcam_640x480_420.mjpeg").read_bytes())[:20]
    dev = Path("/dev/video43")
    with FakeCamera(dev, frames, formats=("MJPG",)) as cam:
        phase = {"name": "first", "since": time.monotonic(), "last": 0.0}

        def tick() -> None:
            now = time.monotonic()
            if phase["name"] == "first" and cam.frames_pushed >= 3:
                cam.unplug()
                phase.update(name="gone", since=now)
            elif phase["name"] == "gone" and now - phase["since"] > 2.5:
                cam.replug()  # the sender reopens it with backoff (0.5 s, 1 s, 2 s ...)
                phase.update(name="back", since=now)
            elif (
                phase["name"] in ("first", "back")
                and cam.streaming
                and not cam._done
                and now - phase["last"] > 0.03
                and cam.push()
            ):
                phase["last"] = now

        with multicast_receiver(lo) as (sock, group):
            run = run_cli(
                [
                    "--source",
                    f"v4l2:{dev}",
                    "--group",
                    group,
                    *BASE,
                    "--mtu",
                    "1500",
                    "--count",
                    "6",
                    "--heartbeat-interval",
                    "0.2",
                    "--quiet",
                ],
                sock,
                tick=tick,
                limit_s=30,
            )
    assert run.code == 0
    got = reassemble(run.datagrams)
    states = [hb.source_state for hb in got.heartbeats]
    assert SourceState.OFFLINE in states  # while unplugged, heartbeats said so
    first_offline = states.index(SourceState.OFFLINE)
    assert SourceState.LIVE in states[first_offline:]  # and live again once it was back
    assert len(got.frames) == 6 and all(f in frames for f in got.frames)


# ---------------------------------------------------------------------------- transports


def test_broadcast_on_lo_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(["--source", "sample", "--interface", "lo", "--broadcast", "--count", "1"])
    assert run.code == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, err
    assert "lo has no broadcast address" in errors[0]
    assert "Traceback" not in err


def test_unicast_to_loopback_delivers(data_files: DataFiles) -> None:
    expected = naive_split((data_files / "webcam_640x480_420.mjpeg").read_bytes())[:8]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        run = run_cli(
            [
                "--source",
                str(data_files / "webcam_640x480_420.mjpeg"),
                "--interface",
                "lo",
                "--unicast",
                f"127.0.0.1:{port}",
                "--mtu",
                "1500",
                "--fps",
                "100",
                "--count",
                "8",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    assert_frames(reassemble(run.datagrams), expected)


def test_heartbeats_carry_name_size_fps_and_end(lo: net.Interface) -> None:
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                "sample",
                "--group",
                group,
                "--interface",
                "lo",
                "--ttl",
                "0",
                "--name",
                "bench-cam 1",
                "--fps",
                "40",
                "--count",
                "16",
                "--heartbeat-interval",
                "0.1",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    kinds = [codec.check_prefix(d)[0] for d, _ in run.datagrams]
    assert Kind.HEARTBEAT in kinds
    got = reassemble(run.datagrams)
    hbs = got.heartbeats
    assert len(hbs) >= 3  # one at start, ~every 0.1 s over ~0.4 s, one at the end
    assert {h.stream_id for h in hbs} == got.stream_ids
    for h in hbs:
        assert h.name == "bench-cam 1"
        assert (h.width, h.height, h.fps_milli) == (640, 480, 40_000)
        assert h.interval_ms == 100
    assert [h.source_state for h in hbs[:-1]] == [SourceState.LIVE] * (len(hbs) - 1)
    assert hbs[-1].source_state == SourceState.ENDED
    assert hbs[-1].frames_sent == 16
    assert kinds[-1] == Kind.HEARTBEAT  # the ENDED heartbeat is the last datagram
    assert len(got.frames) == 16


def test_max_rate_caps_the_bitrate_and_skips_frames(
    data_files: DataFiles, lo: net.Interface, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = data_files / "synthetic_1280x720_422.mjpeg"
    source_frames = naive_split(path.read_bytes())
    count = 45
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                str(path),
                "--group",
                group,
                *BASE,
                "--mtu",
                "1500",
                "--fps",
                "30",
                "--count",
                str(count),
                "--max-rate",
                "2M",
            ],
            sock,
        )
    assert run.code == 0
    symbol_kinds = (Kind.SOURCE, Kind.REPAIR)
    fragments = [(d, t) for d, t in run.datagrams if codec.check_prefix(d)[0] in symbol_kinds]
    # bits on the wire (UDP payload + 28 bytes of IPv4/UDP header), by arrival time
    bits = sum((len(d) + 28) * 8 for d, _ in fragments[1:])
    rate = bits / (fragments[-1][1] - fragments[0][1])
    assert 1.4e6 <= rate <= 2.6e6, f"{rate / 1e6:.2f} Mbit/s"
    got = reassemble(run.datagrams)
    assert got.dropped == []
    # latest frame wins: whole frames were skipped, every sent frame is a source frame, in order
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done:")]
    assert len(done) == 1
    m = re.search(r"sent (\d+), skipped (\d+)", done[0])
    assert m is not None
    sent, skipped = int(m[1]), int(m[2])
    assert sent + skipped == count
    assert skipped > count // 3
    assert len(got.frames) == sent
    indices = [source_frames.index(f) for f in got.frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert indices[-1] > len(indices)  # frames in between were skipped


# ---------------------------------------------------------------------------- loss repair


def _symbols(run: Run) -> list[codec.Symbol]:
    out = [codec.decode(d) for d, _ in run.datagrams]
    return [m for m in out if isinstance(m, codec.Symbol)]


def test_fec_auto_sends_default_redundancy_and_says_so(
    data_files: DataFiles, lo: net.Interface, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = data_files / "webcam_640x480_420.mjpeg"
    expected = naive_split(path.read_bytes())[:15]
    status = tmp_path / "status.json"
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                str(path),
                "--group",
                group,
                *BASE,
                "--mtu",
                "1500",
                "--fps",
                "10",
                "--count",
                "15",
                "--status-json",
                str(status),
            ],
            sock,
        )
    assert run.code == 0
    assert_frames(reassemble(run.datagrams), expected)
    symbols = _symbols(run)
    repair = [m for m in symbols if m.kind == Kind.REPAIR]
    assert repair and all(m.fec_scheme == 2 for m in symbols)  # Reed–Solomon by default
    for m in repair:  # no receiver reports: every frame got the default redundancy, R > 0
        assert 0 < m.repair_planned <= min(m.k, repair_capacity(2, m.k)) and m.esi >= m.k
    assert all(len(m.payload) == 1424 for m in repair)
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done:")]
    assert len(done) == 1
    assert re.search(r"fec auto \d+\.\d %, no receiver reports: default redundancy", done[0])
    fec = json.loads(status.read_text())["fec"]
    assert (fec["fec"], fec["fec_scheme"], fec["no_reports"]) == ("auto", "rs", True)
    assert fec["repair_proactive_sent"] > 0 and fec["repair_nack_sent"] == 0
    assert fec["extra_datagrams_pct"] > 0


@pytest.mark.parametrize(
    ("fec", "more", "scheme"),
    [("off", [], 0), ("25", [], 2), ("25", ["--fec-scheme", "raptorq"], 1)],
)
def test_fec_off_and_fixed_percent(
    lo: net.Interface, fec: str, more: list[str], scheme: int
) -> None:
    """``fec_scheme`` 2 (Reed–Solomon) by default, 1 with ``--fec-scheme raptorq``."""
    with multicast_receiver(lo) as (sock, group):
        run = run_cli(
            [
                "--source",
                "sample",
                "--group",
                group,
                *BASE,
                "--count",
                "4",
                "--fec",
                fec,
                *more,
                "--fps",
                "50",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    symbols = _symbols(run)
    assert {m.fec_scheme for m in symbols} == {scheme}
    repair = [m for m in symbols if m.kind == Kind.REPAIR]
    if fec == "off":
        assert repair == []
        beats = reassemble(run.datagrams).heartbeats
        assert beats and all((h.fec_scheme, h.nack_rate_milli) == (0, 0) for h in beats)
    else:
        k = {m.frame_id: m.k for m in symbols}
        assert {m.frame_id: m.repair_planned for m in repair} == {
            f: -(-n * 25 // 100) for f, n in k.items()
        }
    assert len(reassemble(run.datagrams).frames) == 4


# ---------------------------------------------------------------------------- group checks


@pytest.mark.parametrize(
    ("group", "words"),
    [("10.0.0.1:5000", "not a multicast address"), ("224.0.0.5:5000", "link-local control")],
)
def test_bad_group_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], group: str, words: str
) -> None:
    run = run_cli(["--source", "sample", "--group", group, *BASE, "--count", "1"])
    assert run.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert group.split(":")[0] in err and words in err
    assert err.startswith("mcastcam-send: error: ")


def test_aliased_group_warns_but_runs(lo: net.Interface, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sock = net.open_multicast_receiver("239.0.0.1", 0, lo, RCVBUF)
    with sock:
        port = sock.getsockname()[1]
        caplog.clear()
        run = run_cli(
            [
                "--source",
                "sample",
                "--group",
                f"239.0.0.1:{port}",
                *BASE,
                "--count",
                "1",
                "--quiet",
            ],
            sock,
        )
    assert run.code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("239.0.0.1" in w and "239.255" in w for w in warnings), warnings
    got = reassemble(run.datagrams)
    assert got.frames == naive_split(SAMPLE.read_bytes())[:1]


# ---------------------------------------------------------------------------- bad input


def _no_ipv4_interface() -> str | None:
    for name in netifaces.interfaces():
        if not netifaces.ifaddresses(name).get(netifaces.AF_INET):
            return str(name)
    return None


def _unreadable(tmp_path: Path) -> str:
    # even root cannot read /proc/self/mem from offset 0 (EIO): a truly unreadable file
    link = tmp_path / "unreadable.mjpeg"
    if not link.is_symlink():
        link.symlink_to("/proc/self/mem")
    return str(link)


def _empty(tmp_path: Path) -> str:
    p = tmp_path / "empty.mjpeg"
    p.write_bytes(b"")
    return str(p)


# (argv, exit code, words the one line must contain)
BAD_INPUT: dict[str, tuple[Callable[[Path], list[str]], int, str]] = {
    "missing device": (lambda _: ["--source", "/dev/video9"], 1, "/dev/video9: no such device"),
    "unsupported format": (lambda _: ["--format", "h264"], 2, "--format"),
    "format for a file": (
        lambda _: ["--source", "sample", "--format", "yuyv"],
        2,
        "only to a V4L2 device",
    ),
    "size not WxH": (lambda _: ["--source", "testpattern", "--size", "12x"], 2, "'12x'"),
    "odd size": (lambda _: ["--source", "testpattern", "--size", "321x240"], 2, "321x240"),
    "size for a file": (lambda _: ["--source", "sample", "--size", "320x240"], 2, "--size"),
    "port too big": (lambda _: ["--group", "239.255.0.1:70000"], 2, "70000"),
    "port not a number": (lambda _: ["--group", "239.255.0.1:http"], 2, "'http'"),
    "broadcast port": (lambda _: ["--broadcast", "--port", "0"], 2, "--port 0"),
    "no such interface": (lambda _: ["--interface", "nosuch0"], 2, "no such interface nosuch0"),
    "unreadable file": (lambda p: ["--source", _unreadable(p)], 1, "cannot read"),
    "empty file": (lambda p: ["--source", _empty(p)], 1, "no valid JPEG frame"),
    "missing file": (lambda p: ["--source", str(p / "nope.mjpeg")], 2, "no such file"),
    "unknown source": (lambda p: ["--source", str(p / "nope")], 2, "not found"),
    "empty folder": (lambda p: ["--source", str(p)], 1, "holds no .jpg"),
    "fps 0": (lambda _: ["--fps", "0"], 2, "'0'"),
    "fps too high": (lambda _: ["--source", "sample", "--fps", "20000"], 2, "--fps 20000"),
    "quality 101": (lambda _: ["--source", "testpattern", "--quality", "101"], 2, "--quality 101"),
    "control without =": (lambda _: ["--control", "bad"], 2, "--control 'bad'"),
    "control for a file": (
        lambda _: ["--source", "sample", "--control", "brightness=1"],
        2,
        "--control brightness",
    ),
    "mtu 100": (lambda _: ["--mtu", "100"], 2, "--mtu 100"),
    "ttl 300": (lambda _: ["--ttl", "300"], 2, "--ttl 300"),
    "count 0": (lambda _: ["--count", "0"], 2, "--count 0"),
    "two transports": (
        lambda _: ["--broadcast", "--unicast", "127.0.0.1:9"],
        2,
        "exclude each other",
    ),
    "unknown option": (lambda _: ["--frobnicate"], 2, "--frobnicate"),
    "spread 2": (lambda _: ["--spread", "2"], 2, "--spread 2"),
    "sndbuf 0": (lambda _: ["--source", "sample", "--sndbuf", "0"], 2, "bad buffer size 0"),
    "name too long": (lambda _: ["--name", "x" * 65], 2, "--name 'xxx"),
    "unicast without host": (lambda _: ["--unicast", ":5000"], 2, "--unicast needs a host"),
    "max-rate 0": (lambda _: ["--max-rate", "0"], 2, "bad rate '0'"),
    "fec word": (lambda _: ["--fec", "lots"], 2, "--fec 'lots': must be auto, off or a percent"),
    "fec 150": (lambda _: ["--fec", "150"], 2, "--fec '150': the percent must be in 0..100"),
    "fec scheme": (
        lambda _: ["--fec-scheme", "zfec"],
        2,
        "--fec-scheme 'zfec': must be rs or raptorq",
    ),
}


def _bad_argv(tmp_path: Path, case: str) -> list[str]:
    argv = BAD_INPUT[case][0](tmp_path)
    extra = [] if "--interface" in argv else ["--interface", "lo"]
    return [*argv, *extra, "--count", "1"] if "--count" not in argv else [*argv, *extra]


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    _, code, words = BAD_INPUT[case]
    run = run_cli(_bad_argv(tmp_path, case))
    assert run.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("mcastcam-send: error: ")]
    assert len(errors) == 1, err
    assert words in errors[0], errors[0]
    # with --quiet nothing else is printed: exactly one line on stderr
    run = run_cli([*_bad_argv(tmp_path, case), "--quiet"])
    assert run.code == code
    out = capsys.readouterr()
    assert out.err.splitlines() == errors, out.err
    assert out.out == ""


def test_interface_without_ipv4(capsys: pytest.CaptureFixture[str]) -> None:
    name = _no_ipv4_interface()
    if name is None:
        pytest.skip("every interface here has an IPv4 address")
    run = run_cli(["--source", "sample", "--interface", name, "--count", "1", "--quiet"])
    assert run.code == 2
    assert capsys.readouterr().err == (
        f"mcastcam-send: error: interface {name} has no IPv4 address\n"
    )


def test_garbage_file_is_counted_then_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "garbage.mjpeg"
    p.write_bytes(b"\xff\xd8 this is not a JPEG " * 100)
    run = run_cli(["--source", str(p), "--interface", "lo", "--count", "1", "--quiet"])
    assert run.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines  # the garbage warning, then the one error line
    assert lines[0].endswith(f"{p}: skipped 0 corrupt frame(s) and 2200 byte(s) of garbage")
    assert lines[1] == f"mcastcam-send: error: file {p}: no valid JPEG frame found"


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(["--source", "/dev/video9", "--interface", "lo", "--debug"])
    assert run.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "SourceError" in err
    assert err.rstrip().splitlines()[-1] == (
        "mcastcam-send: error: cannot open V4L2 device /dev/video9: no such device"
    )


# ---------------------------------------------------------------------------- help, devices

OPTIONS = [
    "--source",
    "--size",
    "--fps",
    "--loop",
    "--format",
    "--quality",
    "--subsampling",
    "--control",
    "--list-devices",
    "--count",
    "--group",
    "--interface",
    "--ttl",
    "--no-multicast-loop",
    "--no-loop",
    "--broadcast",
    "--port",
    "--unicast",
    "--mtu",
    "--fec",
    "--fec-scheme",
    "--key-file",
    "--encrypt",
    "--aead",
    "--sndbuf",
    "--no-gso",
    "--max-rate",
    "--spread",
    "--name",
    "--heartbeat-interval",
    "--discovery-port",
    "--announce-interval",
    "--status-json",
    "--metrics",
    "--config",
    "--debug",
    "--quiet",
    "--help",
]


def test_help_mentions_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(["--help"])
    assert run.code == 0
    out = capsys.readouterr().out
    parser_options = {
        o for a in cli.build_parser()._actions for o in a.option_strings if o.startswith("--")
    }
    assert parser_options == set(OPTIONS)
    for option in OPTIONS:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", out), option
    assert "examples:" in out and "mcastcam-send --list-devices" in out


def test_list_devices_without_devices(capsys: pytest.CaptureFixture[str]) -> None:
    if list(Path("/dev").glob("video*")):
        pytest.skip("this host has /dev/video* devices")
    run = run_cli(["--list-devices", "--quiet"])
    assert run.code == 0
    out = capsys.readouterr()
    assert out.out == "no V4L2 capture device found (/dev/video*)\n"
    assert out.err == ""
