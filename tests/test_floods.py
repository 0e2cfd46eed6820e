"""Floods and hijack attempts against a real ``mcastcam-recv`` (issue #12 §3-4, no key).

Real processes on loopback multicast (pinned to ``lo``, TTL 0, groups in 239.255.0.0/16): a
real ``mcastcam-send`` streams a sample file while a forger sends heartbeats from a plain UDP
socket. The receiver's CPU and RSS come from ``/proc/PID/stat`` and ``/proc/PID/status``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcastcam import net
from mcastcam.protocol.codec import SYMBOL_HEADER, Heartbeat, encode
from mcastcam.protocol.fec import repair_capacity
from mcastcam.protocol.wire import FecScheme, Kind
from tests.conftest import naive_split

pytestmark = pytest.mark.multicast

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mcastcam" / "data" / "sample_webcam_640x480.mjpeg"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log
            )
        self.procs.append(proc)
        return proc

    def receiver(self, group: str, port: int) -> subprocess.Popen[bytes]:
        proc = self.start(
            "recv", "-m", "mcastcam.receiver.cli", "--interface", "lo", "--group", group,
            "--http", f"127.0.0.1:{port}", "--no-reports", "--quiet",
        )  # fmt: skip
        wait_for(lambda: get(port, "/status"), 20, "receiver up")
        return proc

    def sender(self, group: str, name: str, source: Path = SAMPLE) -> subprocess.Popen[bytes]:
        return self.start(
            f"send-{len(self.procs)}", "-m", "mcastcam.sender.cli", "--source", str(source),
            "--loop", "--fps", "30", "--interface", "lo", "--ttl", "0", "--group", group,
            "--mtu", "1500", "--name", name, "--quiet",
        )  # fmt: skip

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    for proc in p.procs:
        p.stop(proc)


@pytest.fixture
def group() -> str:
    return (
        f"239.255.{random.randint(2, 254)}.{random.randint(1, 254)}:{free_port(socket.SOCK_DGRAM)}"
    )


def forger(group: str) -> tuple[socket.socket, tuple[str, int]]:
    """A UDP socket that sends to ``group`` on ``lo`` only (TTL 0)."""
    host, port = group.split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return s, (host, int(port))


def forged_heartbeat(stream_id: int, name: str, interval_ms: int = 1000, seq: int = 0) -> bytes:
    return encode(
        Heartbeat(
            stream_id=stream_id, seq=seq, name=name, host="127.0.0.1", source_state=0,
            width=640, height=480, fps_milli=30000, interval_ms=interval_ms, frames_sent=0,
            datagrams_sent=0, uptime_ns=0, send_ts_ns=1, audience=0, run_nonce=0x1234,
            fec_scheme=1, nack_delay_ms=5, nack_rate_milli=0, repair_window_ms=500,
        )
    )  # fmt: skip


def followed(port: int) -> dict[str, Any] | None:
    st = get(port, "/status")
    return next((s for s in st["streams"] if s["followed"]), None)


def read_stream(port: int, seconds: float) -> list[bytes]:
    from mcastcam.client import iter_frames

    frames, end = [], time.monotonic() + seconds
    for jpeg in iter_frames(f"http://127.0.0.1:{port}/stream", timeout=5):
        frames.append(bytes(jpeg.jpeg))
        if time.monotonic() > end:
            break
    return frames


def test_forged_heartbeat_with_the_live_name_does_not_take_over(procs: Procs, group: str) -> None:
    port = free_port()
    procs.receiver(group, port)
    procs.sender(group, "cam")
    real = wait_for(lambda: (f := followed(port)) and f["frames_completed"] > 5 and f, 20, "frames")
    s, dest = forger(group)
    with s:
        for i in range(20):  # new id, same name, the largest interval allowed, 20 times
            s.sendto(forged_heartbeat(0xBAD0BAD0, "cam", 60_000, seq=i), dest)
        frames = read_stream(port, 2.0)
        s.sendto(forged_heartbeat(0xBAD0BAD0, "cam", 60_000, seq=99), dest)
    assert followed(port)["stream_id"] == real["stream_id"]  # type: ignore[index]
    known = set(naive_split(SAMPLE.read_bytes()))
    assert len(frames) >= 30 and all(f in known for f in frames)  # byte-exact, flowing


def test_a_second_sender_with_the_same_name_does_not_take_over(
    procs: Procs, group: str, tmp_path: Path
) -> None:
    port = free_port()
    procs.receiver(group, port)
    procs.sender(group, "cam")
    real = wait_for(lambda: (f := followed(port)) and f["frames_completed"] > 5 and f, 20, "frames")
    other = tmp_path / "other.mjpeg"  # the attacker's images: the sample's frames reversed
    other.write_bytes(b"".join(reversed(naive_split(SAMPLE.read_bytes())[:20])) + b"\xff\xd9")
    procs.sender(group, "cam", other)
    wait_for(lambda: len(get(port, "/status")["streams"]) == 2, 20, "the second sender heard")
    frames = read_stream(port, 3.0)
    st = get(port, "/status")
    assert followed(port)["stream_id"] == real["stream_id"]  # type: ignore[index]
    second = next(s for s in st["streams"] if not s["followed"])
    assert second["frames_completed"] > 0  # it did complete frames, and still no takeover
    assert len(frames) >= 45 and all(f in set(naive_split(SAMPLE.read_bytes())) for f in frames)


def test_reed_solomon_fields_are_range_checked_and_forged_repair_never_served(
    procs: Procs, group: str
) -> None:
    """FEC scheme 2 from the network (docs/protocol.md §4, §5a), no key: an attacker who hears
    the stream sends repair symbols with ESIs beyond the code's k + m(k), frames declaring
    R > m(k), an unknown scheme, and a flood of in-code repair symbols with the real frames'
    headers and random payloads. Each kind is counted under its reason on the real stream;
    every served frame is one of the sender's; the stream stays followed."""
    port = free_port()
    procs.receiver(group, port)
    procs.sender(group, "cam")
    wait_for(lambda: (f := followed(port)) and f["frames_completed"] > 5 and f, 20, "frames")
    host, udp_port = group.split(":")
    listen = net.open_multicast_receiver(host, int(udp_port), net.resolve_interface("lo"))
    listen.settimeout(2.0)
    heard: list[tuple[int, ...]] = []
    try:
        while len(heard) < 40:  # the attacker's view: real source symbols of scheme 2
            data = listen.recv(65536)
            h = SYMBOL_HEADER.unpack_from(data)
            if h[2] == Kind.SOURCE and h[12] == FecScheme.REED_SOLOMON:
                heard.append(h)
    finally:
        listen.close()
    sock, dest = forger(group)
    rng = random.Random(11)

    where = {"kind": 2, "seq": 5, "esi": 7, "frame_len": 9, "fec_scheme": 12, "repair_planned": 14}

    def symbol(h: tuple[int, ...], **over: int) -> bytes:
        """A heard header with some fields replaced (SYMBOL_HEADER order), random payload."""
        fields = list(h)
        for name, value in over.items():
            fields[where[name]] = value
        return SYMBOL_HEADER.pack(*fields) + rng.randbytes(h[8])

    sent = 0
    for h in heard[:20]:
        t, k = h[8], -(-h[9] // h[8])
        m = repair_capacity(FecScheme.REED_SOLOMON, k)
        attacks = [
            symbol(h, kind=Kind.REPAIR, esi=k + m),  # beyond the code: bad_esi
            symbol(h, frame_len=100 * t, esi=0, repair_planned=65),  # k 100, m 64: bad_geometry
            symbol(h, kind=Kind.REPAIR, esi=k, fec_scheme=3),  # unknown_fec
        ]
        for _ in range(25):
            for datagram in attacks:
                sock.sendto(datagram, dest)
                sent += 1
    for h in heard:  # in-code repair with the real headers and garbage: 40 × 200 datagrams
        k = -(-h[9] // h[8])
        m = repair_capacity(FecScheme.REED_SOLOMON, k)
        for j in range(200):
            sock.sendto(symbol(h, kind=Kind.REPAIR, esi=k + j % m), dest)
            sent += 1
            if j % 50 == 0:
                time.sleep(0.001)
    sock.close()
    frames = read_stream(port, 2.0)
    real = followed(port)
    assert real is not None and real["name"] == "cam"
    errors = real["decode_errors"]
    assert errors.get("bad_esi", 0) >= 20 * 25 * 0.9, errors
    assert errors.get("bad_geometry", 0) >= 20 * 25 * 0.9, errors
    assert errors.get("unknown_fec", 0) >= 20 * 25 * 0.9, errors
    assert sent == 20 * 25 * 3 + 40 * 200
    assert len(frames) >= 30 and all(f in set(naive_split(SAMPLE.read_bytes())) for f in frames)


@pytest.mark.slow
def test_200k_random_heartbeats_leave_rss_cpu_and_log_bounded(
    procs: Procs, group: str, tmp_path: Path
) -> None:
    port = free_port()
    recv = procs.receiver(group, port)
    procs.sender(group, "cam")
    real = wait_for(lambda: (f := followed(port)) and f["frames_completed"] > 5 and f, 20, "frames")
    rss_before = rss_mb(recv.pid)
    template = bytearray(forged_heartbeat(1, "x"))
    rng = random.Random(12)
    s, dest = forger(group)
    sent, start = 0, time.monotonic()
    with s:
        while sent < 200_000 and time.monotonic() - start < 25:  # 10k/s, 100 per 10 ms
            for _ in range(100):
                template[6:10] = rng.getrandbits(32).to_bytes(4, "big")
                s.sendto(template, dest)
            sent += 100
            ahead = start + sent / 10_000 - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    flood_s = time.monotonic() - start
    assert sent == 200_000
    time.sleep(0.5)
    cpu0, t0 = cpu_seconds(recv.pid), time.monotonic()
    time.sleep(10)
    cpu = (cpu_seconds(recv.pid) - cpu0) / (time.monotonic() - t0)
    rss_after = rss_mb(recv.pid)
    st = get(port, "/status")
    log_size = (tmp_path / "recv.log").stat().st_size
    print(
        f"flood {sent} in {flood_s:.1f} s; RSS {rss_before:.1f} -> {rss_after:.1f} MB; "
        f"CPU after {cpu * 100:.1f} %; log {log_size} B; streams {len(st['streams'])}; "
        f"refused {st['decode_errors'].get('too_many_streams', 0)}"
    )
    assert rss_after < 100
    assert cpu < 0.10
    assert log_size < 20_000
    assert len(st["streams"]) <= 16
    assert followed(port)["stream_id"] == real["stream_id"]  # type: ignore[index]
    assert wait_for(lambda: followed(port)["liveness"] == "alive", 5, "still alive")  # type: ignore[index]


@pytest.mark.slow
def test_real_restart_under_16_fake_ids_is_followed_within_a_second(
    procs: Procs, group: str
) -> None:
    port = free_port()
    procs.receiver(group, port)
    first = procs.sender(group, "cam")
    old = wait_for(lambda: (f := followed(port)) and f["frames_completed"] > 5 and f, 20, "frames")
    s, dest = forger(group)
    ids = [random.getrandbits(32) for _ in range(16)]
    with s:

        def beat(n: int) -> None:  # 32 datagrams/s over the 16 fake ids
            s.sendto(forged_heartbeat(ids[n % 16], "cam", 1000, seq=n), dest)

        n = 0
        for n in range(64):  # 2 s of fakes before the restart
            beat(n)
            time.sleep(1 / 32)
        procs.stop(first)
        procs.sender(group, "cam")
        seen_new: float | None = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            n += 1
            beat(n)
            st = get(port, "/status")
            new = [x for x in st["streams"] if x["stream_id"] != old["stream_id"]
                   and x["frames_completed"] > 0]  # fmt: skip
            if new and seen_new is None:
                seen_new = time.monotonic()  # the restarted run completed its first frame
            f = next((x for x in st["streams"] if x["followed"]), None)
            if f is not None and f["stream_id"] != old["stream_id"]:
                break
            time.sleep(1 / 32)
        else:
            raise AssertionError("the restarted sender was not followed")
    assert seen_new is not None
    recovery = time.monotonic() - seen_new
    print(f"followed {recovery:.2f} s after the restarted run's first complete frame")
    assert recovery < 1.5


def test_forged_report_flood_does_not_write_a_log_line_per_invented_receiver(
    procs: Procs, group: str, tmp_path: Path
) -> None:
    """2,000 reports with random receiver ids (no key): a few lines, then one counted line."""
    from mcastcam import net
    from mcastcam.protocol.codec import ReceiverReport, decode

    host, port = group.split(":")
    listen = net.open_multicast_receiver(host, int(port), net.resolve_interface("lo"))
    listen.setblocking(True)
    try:
        sender = procs.start(
            "send-flood", "-m", "mcastcam.sender.cli", "--source", str(SAMPLE), "--loop",
            "--fps", "30", "--interface", "lo", "--ttl", "0", "--group", group,
            "--mtu", "1500", "--name", "cam",
        )  # fmt: skip
        listen.settimeout(10)
        while True:  # the sender's heartbeat names its run; its source is its socket
            data, addr = listen.recvfrom(65535)
            with_hb = decode(data)
            if isinstance(with_hb, Heartbeat):
                break
    finally:
        listen.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            rep = ReceiverReport(
                with_hb.stream_id, i, random.randint(1, 2**32 - 1), f"forged{i}", "127.0.0.1",
                0, 0, 0, 0, 0, run_nonce=with_hb.run_nonce,
            )  # fmt: skip
            s.sendto(encode(rep), addr)
            if i % 200 == 199:
                time.sleep(0.05)
    time.sleep(1.0)
    assert sender.poll() is None
    procs.stop(sender)
    lines = [
        line for line in (tmp_path / "send-flood.log").read_text().splitlines()
        if "receiver" in line
    ]  # fmt: skip
    one_by_one = [line for line in lines if "forged" in line]
    counted = [line for line in lines if "not logged one by one" in line]
    assert 1 <= len(one_by_one) <= 25, len(one_by_one)
    assert counted, lines[-5:]
    assert len(lines) <= 40, len(lines)
