#!/usr/bin/env python3
"""Sender benchmark: CPU per frame and the highest zero-loss frame rate on loopback multicast.

Runs the real ``mcastcam-send`` CLI as a subprocess (``python -m mcastcam.sender.cli``) on
real MJPEG recordings from ``../shared/data`` (720p ``cockatoo_1280x720_422.mjpeg`` and the
1080x1920 ``fox_1080x1920_420.mjpeg``), sending to a group in 239.255.0.0/16 on ``lo`` with
TTL 0 and ``--mtu 1500``, and receives in this process with a raw socket that counts
datagrams per frame id (a frame is delivered when all its ``frag_count`` fragments arrived).

CPU is the sender process's user+sys time, not wall time:

* steady state: ``utime + stime`` from ``/proc/PID/stat`` sampled while frames arrive,
  divided by the frames that started in that window (per-frame cost without start-up);
* total: ``resource.getrusage(RUSAGE_CHILDREN)`` around the run (start-up, file read and
  split included).

Zero-loss rate: ``--fps`` steps up (30, 60, 120, 240, 480, 960); a step passes when every
one of ``--count`` frames arrived complete and the achieved rate is at least 90 % of the
asked rate. The last passing step is reported. Every run has a ``--count`` and a timeout;
subprocesses are killed on exit.

    python tools/bench_send.py [--data ../shared/data] [--json results.json] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcastcam import net  # noqa: E402
from mcastcam.protocol.codec import SYMBOL_HEADER  # noqa: E402
from mcastcam.protocol.wire import MAGIC, VERSION, Kind  # noqa: E402

CLIPS = {
    "720p": "cockatoo_1280x720_422.mjpeg",
    "1080p": "fox_1080x1920_420.mjpeg",
}
LADDER = (30, 60, 120, 240, 480, 960)
GROUP = "239.255.99.1"
RCVBUF = 64 << 20
TICK = os.sysconf("SC_CLK_TCK")
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # socket(7); missing from Python
TARGET_FRACTION = 0.15  # 1080p at 60 fps from a file: at most 15 % of one core
_UNPACK = SYMBOL_HEADER.unpack_from
_FRAGMENT = int(Kind.SOURCE)  # source symbols: k per frame (repair not counted)


@dataclass
class RunResult:
    clip: str
    fps: float
    count: int
    exit_code: int | None
    frames_seen: int = 0
    frames_complete: int = 0
    datagrams: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    achieved_fps: float = 0.0
    mbit_s: float = 0.0
    sender_sent: int | None = None
    sender_skipped: int | None = None
    rx_socket_drops: int | None = None
    cpu_total_s: float = 0.0
    cpu_window_s: float = 0.0
    frames_in_window: int = 0
    wall_window_s: float = 0.0
    cpu_ms_per_frame: float | None = None
    core_fraction: float | None = None
    zero_loss: bool = False
    note: str = ""


@dataclass
class Report:
    machine: dict[str, Any]
    cpu: list[RunResult] = field(default_factory=list)
    ladder: dict[str, list[RunResult]] = field(default_factory=dict)
    zero_loss_fps: dict[str, float | None] = field(default_factory=dict)


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (proc(5) ``/proc/PID/stat`` fields 14 and 15)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped at ``sock`` (full buffer): ``drops`` of /proc/net/udp."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 13 and cols[9] == inode:
                return int(cols[12])
    return None


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def open_receiver() -> socket.socket:
    lo = net.resolve_interface("lo")
    sock = net.open_multicast_receiver(GROUP, 0, lo)
    try:  # root may exceed net.core.rmem_max for this one socket
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        net.set_buffer(sock, "rcv", RCVBUF)
    sock.setblocking(True)
    sock.settimeout(0.05)
    return sock


def run_once(
    clip: str, path: Path, fps: float, count: int, *, sample_interval: float = 0.25
) -> RunResult:
    """One sender run at ``fps`` for ``count`` frames; counts what arrives on loopback."""
    res = RunResult(clip=clip, fps=fps, count=count, exit_code=None)
    sock = open_receiver()
    port = sock.getsockname()[1]
    argv = [
        sys.executable, "-m", "mcastcam.sender.cli", "--source", str(path), "--loop",
        "--fps", f"{fps:g}", "--count", str(count), "--group", f"{GROUP}:{port}",
        "--interface", "lo", "--ttl", "0", "--mtu", "1500", "--heartbeat-interval", "0",
        "--sndbuf", str(4 << 20),
    ]  # fmt: skip
    timeout = count / fps * 2 + 30
    got: dict[int, list[int]] = {}  # frame id -> [fragments seen, frag_count]
    buf = bytearray(65536)
    first_at = last_at = None
    samples: list[tuple[float, float, int]] = []  # (wall, cpu, frames started)
    cpu0 = children_cpu_s()
    with tempfile.TemporaryFile("w+") as err, contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        stack.callback(kill)
        deadline = time.monotonic() + timeout
        next_sample = 0.0
        while True:
            now = time.monotonic()
            if now > deadline:
                res.note = f"timeout after {timeout:.0f} s"
                break
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                if proc.poll() is not None:
                    break  # ended and drained (loopback delivery is synchronous)
                continue
            if n < SYMBOL_HEADER.size:
                continue
            h = _UNPACK(buf)
            if h[0] != MAGIC or h[1] != VERSION or h[2] != _FRAGMENT:
                continue
            now = time.monotonic()
            res.datagrams += 1
            res.bytes += n
            entry = got.get(h[6])
            if entry is None:
                got[h[6]] = entry = [0, -(-h[9] // h[8])]  # k = ceil(frame_len / T)
            entry[0] += 1
            if first_at is None:
                first_at = now
            last_at = now
            if now >= next_sample:
                cpu = proc_cpu_s(proc.pid)
                if cpu is not None:
                    samples.append((now, cpu, len(got)))
                next_sample = now + sample_interval
        try:
            res.exit_code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            res.note = (res.note + "; " if res.note else "") + "did not exit"
        kill()
        res.rx_socket_drops = socket_drops(sock)
        res.cpu_total_s = children_cpu_s() - cpu0
        err.seek(0)
        stderr = err.read()
    for line in stderr.splitlines():
        m = re.search(r"done:.*\bsent (\d+), skipped (\d+)", line)
        if m:
            res.sender_sent, res.sender_skipped = int(m[1]), int(m[2])
    if res.exit_code not in (0, None):
        res.note = (res.note + "; " if res.note else "") + stderr.strip().splitlines()[-1]
    res.frames_seen = len(got)
    res.frames_complete = sum(1 for seen, total in got.values() if seen >= total)
    if first_at is not None and last_at is not None and last_at > first_at:
        res.duration_s = last_at - first_at
        res.achieved_fps = (res.frames_seen - 1) / res.duration_s
        res.mbit_s = (res.bytes + 28 * res.datagrams) * 8 / res.duration_s / 1e6
    if len(samples) >= 2:
        (w0, c0, f0), (w1, c1, f1) = samples[0], samples[-1]
        res.cpu_window_s, res.wall_window_s, res.frames_in_window = c1 - c0, w1 - w0, f1 - f0
        if f1 > f0:
            res.cpu_ms_per_frame = (c1 - c0) / (f1 - f0) * 1e3
            res.core_fraction = (c1 - c0) / (w1 - w0)
    res.zero_loss = (
        res.exit_code == 0
        and res.frames_complete == count
        and res.achieved_fps >= 0.9 * fps
    )  # fmt: skip
    return res


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_row(r: RunResult) -> None:
    print(
        f"{r.clip:6} {r.fps:6g} {r.count:6d} {r.frames_complete:6d} {r.achieved_fps:8.1f} "
        f"{r.mbit_s:8.1f} {fmt(r.cpu_ms_per_frame, '8.2f')} "
        f"{fmt(None if r.core_fraction is None else r.core_fraction * 100, '7.1f')} "
        f"{r.cpu_total_s:7.2f} {fmt(r.rx_socket_drops, '5d')} {fmt(r.sender_skipped, '5d')} "
        f"{'yes' if r.zero_loss else 'no':>5} {r.note}",
        flush=True,
    )


HEADER = (
    f"{'clip':6} {'fps':>6} {'count':>6} {'whole':>6} {'got fps':>8} {'Mbit/s':>8} "
    f"{'ms/frame':>8} {'%core':>7} {'cpu s':>7} {'rxdrp':>5} {'skip':>5} {'ok':>5}"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each CPU run (s)")
    p.add_argument("--ladder-seconds", type=float, default=2.0, help="length of ladder runs")
    args = p.parse_args(argv)
    clips = {k: args.data / v for k, v in CLIPS.items()}
    missing = [str(v) for v in clips.values() if not v.is_file()]
    if missing:
        print(f"skipped: recordings absent: {', '.join(missing)}")
        return 0
    report = Report(machine=machine())
    print(f"machine: {report.machine}")
    print("\nCPU at the nominal rate (steady state, user+sys of the sender process)")
    print(HEADER)
    for clip, fps in (("720p", 30), ("720p", 60), ("1080p", 30), ("1080p", 60)):
        r = run_once(clip, clips[clip], fps, max(30, round(fps * args.seconds)))
        report.cpu.append(r)
        print_row(r)
    print("\nzero-loss ladder")
    print(HEADER)
    for clip, path in clips.items():
        runs = report.ladder.setdefault(clip, [])
        best: float | None = None
        for fps in LADDER:
            r = run_once(clip, path, fps, max(60, min(2000, round(fps * args.ladder_seconds))))
            runs.append(r)
            print_row(r)
            if not r.zero_loss:
                break
            best = fps
        report.zero_loss_fps[clip] = best
    target = next(r for r in report.cpu if r.clip == "1080p" and r.fps == 60)
    frac = target.core_fraction
    verdict = "n/a" if frac is None else "met" if frac <= TARGET_FRACTION else "NOT met"
    print(f"\nzero-loss rates: {report.zero_loss_fps}")
    print(
        f"target 1080p@60 <= {TARGET_FRACTION:.0%} of one core: "
        f"{fmt(None if frac is None else frac * 100, '.1f')} % -> {verdict}"
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
