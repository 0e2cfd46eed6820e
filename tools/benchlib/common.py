"""Shared machinery of ``tools/bench``: frames, processes, the observer socket, one trial.

One *trial* runs one system (``"mcastcam"`` or ``"gst"``) end to end on loopback multicast:

* receiver: ``mcastcam-recv`` (``python -m mcastcam.receiver.cli``), or ``gst-launch-1.0
  udpsrc ! rtpjpegdepay ! fdsink fd=1`` whose stdout this process reads to count frames;
* sender: ``mcastcam-send`` (``python -m mcastcam.sender.cli``), or ``gst_send.py`` (appsrc
  with timestamps ! rtpjpegpay ! udpsink sync=true) under Debian's ``/usr/bin/python3``;
* observer: a socket in this process joined to the same group (each socket gets its own
  copy on loopback) that records, per frame, datagrams seen/expected and the first and last
  arrival (``time.monotonic_ns``). It tells when frames *started* (for CPU windows) and how
  many datagrams a frame takes (k); it is passive and costs neither system CPU.

Both systems get the same group/port scheme, ``--interface lo`` / ``bind-address=127.0.0.1``
with TTL 0, 1,500-byte packets (IP MTU), 4 MiB receive buffers, and the same frames.
CPU is ``utime + stime`` of each process from ``/proc/PID/stat`` (proc(5)); RSS is
``VmRSS``/``VmHWM`` from ``/proc/PID/status``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MCASTCAM_BENCH_CACHE", "/tmp/mcastcam-bench"))


def use_snapshot() -> tuple[Path, str]:
    """Benchmark the committed ``HEAD`` (``git archive`` into the cache), not a working tree
    that others may be editing: the figures then belong to one named commit.

    Returns (the mcastcam tree to run, its commit). Falls back to the working tree when
    this is not a git checkout.
    """
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ROOT, "working tree"
    tree = CACHE / f"tree-{sha[:12]}"
    if not (tree / "mcastcam").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "mcastcam"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=arch, check=True, timeout=60)
    return tree, sha


CODE, COMMIT = (
    (ROOT, "working tree") if os.environ.get("MCASTCAM_BENCH_WORKTREE") else use_snapshot()
)
if str(CODE) not in sys.path:
    sys.path.insert(0, str(CODE))

from mcastcam import net  # noqa: E402
from mcastcam.protocol.codec import SYMBOL_HEADER  # noqa: E402
from mcastcam.protocol.wire import MAGIC, VERSION, Kind  # noqa: E402

DATA = (ROOT.parent / "shared" / "data").resolve()
GST_SEND = Path(__file__).resolve().parent / "gst_send.py"
SYS_PYTHON = "/usr/bin/python3"
TICK = os.sysconf("SC_CLK_TCK")
RCVBUF = 4 << 20
MTU = 1500
#: ``MCASTCAM_BENCH_OFFLOAD=off``: mcastcam without UDP GSO/GRO (``--no-gso``, ``--no-gro``).
OFFLOAD = os.environ.get("MCASTCAM_BENCH_OFFLOAD", "on") != "off"
#: ``MCASTCAM_BENCH_UVLOOP=1``: mcastcam's programs on uvloop (``with_uvloop.py``).
UVLOOP = os.environ.get("MCASTCAM_BENCH_UVLOOP", "") not in ("", "0")
WITH_UVLOOP = Path(__file__).resolve().parent / "with_uvloop.py"
DEBIAN_PACKAGES = [
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "python3-gi",
    "gir1.2-gstreamer-1.0",
    "gir1.2-gst-plugins-base-1.0",
]
#: name -> (recording, label); the RTP-compatible copies are made by :func:`prepare`.
CLIPS = {
    "640x480": "webcam_640x480_420.mjpeg",
    "720p": "cockatoo_1280x720_422.mjpeg",
    "1080p": "fox_1080x1920_420.mjpeg",
}
RTP_CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=JPEG,payload=26"
_UNPACK = SYMBOL_HEADER.unpack_from
_FRAGMENT = int(Kind.SOURCE)  # source symbols: k per frame (repair not counted)
_GROUP_N = [0]
_GROUP_LOCK = threading.Lock()


class Skip(Exception):
    """A benchmark cannot run here; the message says why and what to install."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment


def check_tools(install: bool) -> None:
    """Make sure GStreamer and PyGObject are there; install them as root if asked.

    Raises:
        Skip: something is missing and cannot be installed (the message names the packages).
    """

    def ok() -> bool:
        if not shutil.which("gst-launch-1.0") or not Path(SYS_PYTHON).exists():
            return False
        probe = subprocess.run(
            [SYS_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
             "gi.require_version('GstApp', '1.0'); from gi.repository import Gst, GstApp"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            return False
        insp = subprocess.run(
            ["gst-inspect-1.0", "rtpjpegpay"], capture_output=True, timeout=30, check=False
        )
        return insp.returncode == 0

    if ok():
        return
    cmd = ["apt-get", "install", "-y", *DEBIAN_PACKAGES]
    if install and os.geteuid() == 0:
        log("installing: " + " ".join(cmd))
        subprocess.run(cmd, check=False, timeout=900)
        if ok():
            return
    raise Skip(
        "GStreamer side missing: run (as root) `" + " ".join(cmd) + "` and "
        "`pip install -e '.[bench]'` (matplotlib)"
    )


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        raise Skip(f"recording {name} not found in {DATA} (see ../shared/data/README.md)")
    return path


def split_frames(data: bytes) -> list[bytes]:
    from mcastcam.sender.sources.file import split_mjpeg

    return split_mjpeg(data, "bench")[0]


def prepare(clip: str, max_frames: int = 300) -> Path:
    """An RTP/JPEG-compatible copy of ``CLIPS[clip]``: cached ``.mjpeg`` of baseline 4:2:0
    JPEGs with the standard Huffman tables (libjpeg-turbo via simplejpeg, quality 85).

    RFC 2435 carries only type 0/1 (4:2:2/4:2:0) with the Annex K tables, so both systems
    are fed these same bytes in the side-by-side benchmarks.
    """
    import simplejpeg

    src = data_file(CLIPS[clip])
    out = CACHE / f"{clip}_rtp420_q85_{max_frames}.mjpeg"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    frames = split_frames(src.read_bytes())[:max_frames]
    enc = [
        simplejpeg.encode_jpeg(
            simplejpeg.decode_jpeg(f, colorspace="RGB"), quality=85, colorspace="RGB",
            colorsubsampling="420",
        )
        for f in frames
    ]  # fmt: skip
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(b"".join(enc))
    tmp.replace(out)
    return out


_SCANS: dict[Path, set[int]] = {}


def valid_scans(path: Path) -> set[int]:
    if path not in _SCANS:
        _SCANS[path] = {scan_len(f) for f in split_frames(path.read_bytes())}
    return _SCANS[path]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gst = subprocess.run(
        ["gst-launch-1.0", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gstreamer": gst[1] if len(gst) > 1 else "?",
        "loadavg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mcastcam_commit": COMMIT,
        "mcastcam_offload": OFFLOAD,
        "mcastcam_uvloop": UVLOOP,
    }


# ---------------------------------------------------------------- processes


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (proc(5) ``/proc/PID/stat`` fields 14, 15)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_mem_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in KiB, from ``/proc/PID/status``."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0])
    return out


def udp_sockets_on(port: int) -> int:
    """How many UDP sockets are bound to local ``port`` (``/proc/net/udp``)."""
    hexport = f":{port:04X}"
    n = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 1 and cols[1].endswith(hexport):
                n += 1
    return n


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def next_group() -> str:
    with _GROUP_LOCK:  # trials may run in parallel threads (bench cost --parallel)
        _GROUP_N[0] += 1
        n = _GROUP_N[0]
    return f"239.255.{97 + n // 250 % 2}.{1 + n % 250}"


_CHILDREN: list[subprocess.Popen[Any]] = []


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start a child in its own process group; :func:`reap_all` kills it on exit."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    env = dict(os.environ, PYTHONPATH=str(CODE))
    proc = subprocess.Popen(argv, cwd=CODE, env=env, start_new_session=True, **kw)
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ValueError):
        _CHILDREN.remove(proc)
    return proc.returncode


def reap_all() -> None:
    for proc in list(_CHILDREN):
        stop(proc, 2.0)


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---------------------------------------------------------------- commands


def mcastcam_recv_argv(
    group: str, port: int, http_port: int, *, iface: str = "lo", max_clients: int = 1000
) -> list[str]:
    return [
        *_python_module("mcastcam.receiver.cli"), "--group", f"{group}:{port}",
        "--interface", iface, "--http", f"127.0.0.1:{http_port}", "--rcvbuf", str(RCVBUF),
        "--max-clients", str(max_clients), "--quiet", *([] if OFFLOAD else ["--no-gro"]),
    ]  # fmt: skip


def _python_module(module: str) -> list[str]:
    """``python -m MODULE``, or through ``with_uvloop.py`` when :data:`UVLOOP`."""
    if UVLOOP:
        return [sys.executable, str(WITH_UVLOOP), module]
    return [sys.executable, "-m", module]


def mcastcam_send_argv(
    path: Path,
    group: str,
    port: int,
    fps: float,
    count: int,
    *,
    iface: str = "lo",
    ttl: int = 0,
    spread: float | None = None,
) -> list[str]:
    argv = [
        *_python_module("mcastcam.sender.cli"), "--source", str(path), "--loop",
        "--fps", f"{fps:g}", "--count", str(count), "--group", f"{group}:{port}",
        "--interface", iface, "--ttl", str(ttl), "--mtu", str(MTU), "--sndbuf", str(4 << 20),
        *([] if OFFLOAD else ["--no-gso"]),
    ]  # fmt: skip
    if spread is not None:
        argv += ["--spread", f"{spread:g}"]
    return argv


def gst_recv_argv(group: str, port: int, iface: str = "lo") -> list[str]:
    return [
        "gst-launch-1.0", "-q", "udpsrc", f"address={group}", f"port={port}",
        f"multicast-iface={iface}", f"buffer-size={RCVBUF}", f"caps={RTP_CAPS}",
        "!", "rtpjpegdepay", "!", "fdsink", "fd=1", "sync=false",
    ]  # fmt: skip


def gst_send_argv(
    path: Path,
    group: str,
    port: int,
    fps: float,
    count: int,
    *,
    bind: str = "127.0.0.1",
    ttl: int = 0,
) -> list[str]:
    return [
        SYS_PYTHON, str(GST_SEND), str(path), "--group", group, "--port", str(port),
        "--fps", f"{fps:g}", "--count", str(count), "--mtu", str(MTU), "--bind", bind,
        "--ttl", str(ttl),
    ]  # fmt: skip


def scan_len(jpeg: bytes | bytearray) -> int:
    """Bytes from the first SOS marker (``FF DA``) to the end: the entropy-coded scan, which
    RTP/JPEG carries unchanged (RFC 2435 §3.1), plus its header and EOI; -1 if no SOS."""
    i = jpeg.find(b"\xff\xda")
    return len(jpeg) - i if i >= 0 else -1


class JpegCounter(threading.Thread):
    """Reads a byte stream of concatenated JPEGs (a pipe) and counts whole frames.

    A frame ends at EOI (``FF D9``); the next begins with SOI (``FF D8``); ``FF D9 FF D8``
    cannot occur inside entropy-coded data (``FF`` is stuffed as ``FF 00``, T.81 F.1.2.3).
    With ``valid_scans`` (the :func:`scan_len` of every frame sent), a frame counts as
    *delivered* only if its scan has one of those lengths: a depayloader that glued a frame
    together around lost packets is counted in :attr:`bad`. ``keep`` frames are kept.
    """

    def __init__(self, stream: Any, valid_scans: set[int] | None = None, keep: int = 0) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.valid = valid_scans
        self.frames = 0
        self.bad = 0
        self.keep = keep
        self.kept: list[bytes] = []

    def _frame(self, frame: bytes | bytearray) -> None:
        if self.valid is not None and scan_len(frame) not in self.valid:
            self.bad += 1
            return
        self.frames += 1
        if len(self.kept) < self.keep:
            self.kept.append(bytes(frame))

    def run(self) -> None:
        cur = bytearray()
        while True:
            chunk = self.stream.read1(1 << 20)
            if not chunk:
                break
            start = max(0, len(cur) - 3)
            cur += chunk
            pos = 0
            while True:
                i = cur.find(b"\xff\xd9\xff\xd8", max(pos, start))
                if i < 0:
                    break
                self._frame(cur[pos : i + 2])
                pos = i + 2
            del cur[:pos]
        if cur:
            self._frame(cur)


# ---------------------------------------------------------------- observer


class Observer:
    """A passive receiver in this process: per-frame datagram counts and arrival times.

    ``system`` ``"mcastcam"`` keys frames by frame id and knows ``frag_count``; ``"gst"``
    keys RTP/JPEG (RFC 2435) frames by RTP timestamp: complete when the packets from
    fragment offset 0 to the marker bit are all there (counted by sequence numbers).
    """

    def __init__(self, system: str, group: str, iface: str = "lo", port: int = 0) -> None:
        self.system = system
        self.sock = net.open_multicast_receiver(group, port, net.resolve_interface(iface))
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE, root
        self.sock.setblocking(True)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        # key -> [seen, expected(or -1), first_ns, last_ns, first_seq, marker_seq]
        self.frames: dict[int, list[int]] = {}
        self.order: list[int] = []
        self.datagrams = 0
        self.bytes = 0
        self._buf = bytearray(65536)

    def close(self) -> None:
        self.sock.close()

    def poll(self) -> bool:
        """Take one datagram (waits up to 50 ms); False on timeout."""
        try:
            n = self.sock.recv_into(self._buf)
        except TimeoutError:
            return False
        now = time.monotonic_ns()
        b = self._buf
        self.datagrams += 1
        self.bytes += n
        if self.system == "mcastcam":
            if n < SYMBOL_HEADER.size:
                return True
            h = _UNPACK(b)
            if h[0] != MAGIC or h[1] != VERSION or h[2] != _FRAGMENT:
                return True
            key, expected = h[6], -(-h[9] // h[8])  # k = ceil(frame_len / T)
            e = self.frames.get(key)
            if e is None:
                self.frames[key] = e = [0, expected, now, now, 0, 0]
                self.order.append(key)
            e[0] += 1
            e[3] = now
            return True
        if n < 20 or b[0] >> 6 != 2:
            return True
        seq = int.from_bytes(b[2:4], "big")
        key = int.from_bytes(b[4:8], "big")
        marker = b[1] & 0x80
        offset = int.from_bytes(b[13:16], "big")
        e = self.frames.get(key)
        if e is None:
            self.frames[key] = e = [0, -1, now, now, -1, -1]
            self.order.append(key)
        e[0] += 1
        e[3] = now
        if offset == 0:
            e[4] = seq
        if marker:
            e[5] = seq
        if e[4] >= 0 and e[5] >= 0:
            e[1] = (e[5] - e[4]) % 65536 + 1
        return True

    def complete(self) -> int:
        return sum(1 for e in self.frames.values() if e[1] > 0 and e[0] >= e[1])

    def datagrams_per_frame(self) -> float:
        full = [e[1] for e in self.frames.values() if e[1] > 0]
        return sum(full) / len(full) if full else 0.0

    def spans_ms(self) -> list[float]:
        """First to last datagram of each complete frame, milliseconds."""
        return [(e[3] - e[2]) / 1e6 for e in self.frames.values() if e[1] > 0 and e[0] >= e[1]]


# ---------------------------------------------------------------- one trial


@dataclass
class Trial:
    system: str
    clip: str
    fps: float
    count: int
    sent_ok: bool = False
    delivered: int = 0
    observed_complete: int = 0
    datagrams_per_frame: float = 0.0
    achieved_fps: float = 0.0
    send_cpu_per_frame_ms: float | None = None
    recv_cpu_per_frame_ms: float | None = None
    send_core: float | None = None
    recv_core: float | None = None
    recv_rss_kb: int = 0
    recv_hwm_kb: int = 0
    span_ms: list[float] = field(default_factory=list)
    k_list: list[int] = field(default_factory=list)
    sender_skipped: int | None = None
    note: str = ""

    @property
    def zero_loss(self) -> bool:
        return self.sent_ok and self.delivered >= self.count and self.achieved_fps >= 0.9 * self.fps

    def row(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("span_ms")
        d.pop("k_list")
        d["zero_loss"] = self.zero_loss
        return d


def run_trial(
    system: str,
    clip: str,
    path: Path,
    fps: float,
    count: int,
    warmup_s: float = 1.0,
    extra_args: Sequence[str] = (),
) -> Trial:
    """One end-to-end run on loopback multicast; see the module docstring.

    ``extra_args`` are appended to both mcastcam command lines (e.g. ``--key-file K``).
    """
    tr = Trial(system, clip, fps, count)
    group = next_group()
    obs = Observer(system, group)
    port = obs.port
    recv: subprocess.Popen[Any] | None = None
    send: subprocess.Popen[Any] | None = None
    counter: JpegCounter | None = None
    http_port = 0
    try:
        if system == "mcastcam":
            http_port = free_tcp_port()
            recv = spawn(
                [*mcastcam_recv_argv(group, port, http_port), *extra_args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda: _status_ok(http_port, recv), 20, "mcastcam-recv /status")
        else:
            recv = spawn(
                gst_recv_argv(group, port), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            counter = JpegCounter(recv.stdout, valid_scans(path))
            counter.start()
        wait_until(lambda: udp_sockets_on(port) >= 2, 20, "the receiver's socket")
        time.sleep(0.2)
        argv = (
            [*mcastcam_send_argv(path, group, port, fps, count), *extra_args]
            if system == "mcastcam"
            else gst_send_argv(path, group, port, fps, count)
        )
        send = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + count / fps * 3 + 30
        samples: list[tuple[int, float | None, float | None, int]] = []
        next_sample = 0
        while True:
            got = obs.poll()
            now = time.monotonic_ns()
            if time.monotonic() > deadline:
                tr.note = "timeout"
                break
            if not got and send.poll() is not None:
                break
            if obs.order and now >= next_sample:
                samples.append((now, proc_cpu_s(send.pid), proc_cpu_s(recv.pid), len(obs.order)))
                next_sample = now + 200_000_000
        out, err = send.communicate(timeout=10)  # noqa: RUF059
        tr.sent_ok = send.returncode == 0
        m = re.search(rb"sent (\d+), skipped (\d+)", err)
        if m:
            tr.sender_skipped = int(m.group(2))
        if not tr.sent_ok:
            tr.note = (tr.note + " " + err.decode(errors="replace").strip()[-300:]).strip()
        time.sleep(0.3)
        mem = proc_mem_kb(recv.pid)
        tr.recv_rss_kb, tr.recv_hwm_kb = mem.get("VmRSS", 0), mem.get("VmHWM", 0)
        if system == "mcastcam":
            st = http_json(f"http://127.0.0.1:{http_port}/status")
            tr.delivered = sum(s["frames_completed"] for s in st["streams"])
        stop(recv)
        if counter is not None:
            counter.join(5)
            tr.delivered = counter.frames
            if counter.bad:
                tr.note = (tr.note + f" {counter.bad} frames with a wrong scan length").strip()
        tr.observed_complete = obs.complete()
        tr.datagrams_per_frame = obs.datagrams_per_frame()
        tr.span_ms = obs.spans_ms()
        tr.k_list = [e[1] for e in obs.frames.values() if e[1] > 0]
        if len(obs.order) >= 2:
            first = obs.frames[obs.order[0]][2]
            last = obs.frames[obs.order[-1]][2]
            if last > first:
                tr.achieved_fps = (len(obs.order) - 1) / ((last - first) / 1e9)
        _cpu_window(tr, samples, warmup_s)
    finally:
        obs.close()
        for p in (send, recv):
            if p is not None:
                stop(p)
    return tr


def _status_ok(http_port: int, proc: subprocess.Popen[Any] | None = None) -> bool:
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"{proc.args[:4]} exited {proc.returncode} at start")
    try:
        http_json(f"http://127.0.0.1:{http_port}/status", timeout=1)
    except OSError:
        return False
    return True


def _cpu_window(
    tr: Trial, samples: list[tuple[int, float | None, float | None, int]], warmup_s: float
) -> None:
    """CPU per frame over the steady part: from ``warmup_s`` after the first frame to the
    last sample, divided by the frames that started in that window (observer)."""
    if not samples:
        return
    t_first = samples[0][0]
    window = [s for s in samples if s[0] >= t_first + warmup_s * 1e9]
    window = [s for s in window if s[1] is not None and s[2] is not None]
    if len(window) < 2:
        return
    (w0, s0, r0, f0), (w1, s1, r1, f1) = window[0], window[-1]
    if f1 <= f0 or s0 is None or s1 is None or r0 is None or r1 is None:
        return
    frames, wall = f1 - f0, (w1 - w0) / 1e9
    tr.send_cpu_per_frame_ms = (s1 - s0) / frames * 1e3
    tr.recv_cpu_per_frame_ms = (r1 - r0) / frames * 1e3
    tr.send_core = (s1 - s0) / wall
    tr.recv_core = (r1 - r0) / wall


def save(name: str, result: Any) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{name}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    return out


def load(name: str) -> Any:
    path = CACHE / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
