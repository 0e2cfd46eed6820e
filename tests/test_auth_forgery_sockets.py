"""Forged and replayed symbols against lazy verification, through real sockets (protocol §8.5).

A real ``mcastcam-send`` and ``mcastcam-recv`` (separate processes, both with ``--key-file``)
on loopback multicast (``lo``, TTL 0); the sender is rate-capped (4 frames/s at 500 kbit/s)
so a frame's datagrams are spread over ≈ 200 ms, one every ≈ 20 ms. An attacker thread in the
test joins the group, watches the real symbols and, while a client reads ``/stream``, sends
for each one: a forged symbol (right
header, garbage payload, random tag) of the same ESI (after the real one) and of the next
ESIs (mostly before the real ones), forged repair symbols with ESIs beyond k, a forged symbol
opening a new frame id, and a replay of a real datagram of an earlier frame of the same run.
Every frame served must be byte-equal to a frame of the sample, forgeries counted, no state
made from them; under a flood of 10,000 forged symbols/s for the newest live frame the
receiver keeps delivering (≥ 90 % of frames), with bounded CPU and memory.
"""

from __future__ import annotations

import collections
import os
import random
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mcastcam.keys import generate_key_file
from tests.conftest import naive_split
from tests.test_floods import (
    SAMPLE,
    Procs,
    cpu_seconds,
    forger,
    free_port,
    get,
    read_stream,
    rss_mb,
    wait_for,
)
from tests.test_floods import group as group
from tests.test_floods import procs as procs

pytestmark = pytest.mark.multicast


def start(procs: Procs, group: str, key: Path, http: int) -> tuple[Any, Any]:
    recv = procs.start(
        "recv", "-m", "mcastcam.receiver.cli", "--interface", "lo", "--group", group,
        "--http", f"127.0.0.1:{http}", "--quiet", "--key-file", str(key),
    )  # fmt: skip
    wait_for(lambda: get(http, "/status"), 20, "receiver up")
    send = procs.start(
        "send", "-m", "mcastcam.sender.cli", "--source", str(SAMPLE), "--loop", "--fps", "4",
        "--max-rate", "500k", "--interface", "lo", "--ttl", "0", "--group", group, "--mtu",
        "1500", "--name", "cam", "--quiet", "--key-file", str(key),
    )  # fmt: skip
    wait_for(
        lambda: (f := followed(http)) is not None and f["frames_completed"] > 3,
        20,
        "the receiver to serve the keyed stream",
    )
    return recv, send


def followed(port: int) -> dict[str, Any] | None:
    st = get(port, "/status")
    return next((s for s in st["streams"] if s["followed"]), None)


def listener(group: str) -> socket.socket:
    host, port = group.split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    mreq = struct.pack("4s4s", socket.inet_aton(host), socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(0.05)
    return s


class Attacker(threading.Thread):
    """Watches the real symbols of ``group`` and answers each with forgeries (bounded)."""

    def __init__(self, group: str, *, flood: int = 0, seconds: float = 4.0) -> None:
        """``flood`` > 0: that many forged symbols per second instead of the answers."""
        super().__init__(daemon=True)
        self.listen = listener(group)
        self.out, self.dest = forger(group)
        self.out.bind(("0.0.0.0", 0))
        self.own_port = self.out.getsockname()[1]
        self.flood = flood
        self.seconds = seconds
        self.rnd = random.Random(7)
        self.counts: collections.Counter[str] = collections.Counter()
        self.history: collections.deque[bytes] = collections.deque(maxlen=4000)
        self.started_at = 0.0
        self.ended_at = 0.0

    def forge(self, real: bytes, esi: int, frame_id: int | None = None) -> bytes:
        """``real``'s header with ``esi`` (and kind, seq) set, garbage payload, random tag."""
        t = int.from_bytes(real[22:24], "big")
        f = int.from_bytes(real[24:28], "big")
        k = -(-f // t)
        size = t if esi != k - 1 else f - (k - 1) * t
        header = bytearray(real[:48])
        header[3] = 1 if esi < k else 16
        header[10:14] = self.rnd.getrandbits(32).to_bytes(4, "big")
        header[18:22] = esi.to_bytes(4, "big")
        if frame_id is not None:
            header[14:18] = frame_id.to_bytes(4, "big")
        return bytes(header) + os.urandom(size) + os.urandom(16)

    def send(self, data: bytes, what: str) -> None:
        try:
            self.out.sendto(data, self.dest)
        except OSError:  # a full socket buffer: counted, the loop goes on
            self.counts["send_errors"] += 1
            return
        self.counts[what] += 1

    def run(self) -> None:
        self.started_at = time.monotonic()
        with self.listen, self.out:
            if self.flood:
                self.run_flood()
            else:
                self.run_answers()
        self.ended_at = time.monotonic()

    def run_flood(self) -> None:
        """``flood`` forged symbols per second (random ESIs, source and repair) for the
        newest real frame seen, in batches every 5 ms; at most 200,000."""
        end = self.started_at + self.seconds
        latest: bytes | None = None
        self.listen.settimeout(0)
        next_batch = time.monotonic()
        while time.monotonic() < end and self.counts["flood"] < 200_000:
            while True:
                try:
                    real, src = self.listen.recvfrom(65536)
                except (BlockingIOError, TimeoutError):
                    break
                if src[1] != self.own_port and len(real) >= 64 and real[3] in (1, 16):
                    latest = real
            if latest is not None:
                t = int.from_bytes(latest[22:24], "big")
                k = -(-int.from_bytes(latest[24:28], "big") // t)
                r = int.from_bytes(latest[42:44], "big")
                for _ in range(self.flood // 200):
                    self.send(self.forge(latest, self.rnd.randrange(k + r + 8)), "flood")
            next_batch += 0.005
            time.sleep(max(0.0, next_batch - time.monotonic()))

    def run_answers(self) -> None:
        end = self.started_at + self.seconds
        sent = 0
        while time.monotonic() < end and sent < 200_000:
            try:
                real, src = self.listen.recvfrom(65536)
            except TimeoutError:
                continue
            if src[1] == self.own_port:
                continue  # our own forgeries, looped back
            if len(real) < 64 or real[3] not in (1, 16) or not real[5] & 1:
                continue  # the real run's tagged symbols only
            self.answer(real)
            sent = sum(self.counts.values())

    def answer(self, real: bytes) -> None:
        fid = int.from_bytes(real[14:18], "big")
        esi = int.from_bytes(real[18:22], "big")
        t = int.from_bytes(real[22:24], "big")
        f = int.from_bytes(real[24:28], "big")
        r = int.from_bytes(real[42:44], "big")
        k = -(-f // t)
        self.history.append(real)
        self.send(self.forge(real, esi), "forged_after")  # (i) after the real one
        for e in (esi + 1, esi + 2):  # (i) the next ESIs, before the real ones (paced sender)
            if e < k:
                self.send(self.forge(real, e), "forged_before")
        if r or f:  # (ii) repair ESIs no real symbol uses
            self.send(self.forge(real, k + r + 5 + self.rnd.randrange(50)), "forged_repair")
        self.send(self.forge(real, 0, (fid + 40) % 2**32), "forged_new_frame")  # (iii)
        old = [d for d in self.history if 2 <= (fid - int.from_bytes(d[14:18], "big")) % 2**32 < 6]
        if old:  # (iv) a real datagram of an earlier frame of this run, again
            self.send(self.rnd.choice(old), "replayed")


def errors_of(st: dict[str, Any]) -> dict[str, int]:
    errors: dict[str, int] = dict(st["decode_errors"])
    for s in st["streams"]:
        for reason, n in s["decode_errors"].items():
            errors[reason] = errors.get(reason, 0) + n
    return errors


def test_forged_and_replayed_symbols_serve_only_real_frames(
    procs: Procs, group: str, tmp_path: Path
) -> None:
    key = tmp_path / "cam.key"
    generate_key_file(key, 4)
    http = free_port()
    start(procs, group, key, http)
    before = followed(http)
    assert before is not None
    attacker = Attacker(group, seconds=5.0)
    attacker.start()
    frames = read_stream(http, 5.5)
    attacker.join(10)
    time.sleep(0.5)
    st = get(http, "/status")
    after = followed(http)
    assert after is not None
    errors = errors_of(st)
    print(f"attack {dict(attacker.counts)}; receiver errors {errors}; served {len(frames)}; "
          f"completed {after['frames_completed'] - before['frames_completed']}, dropped "
          f"{after['frames_dropped']}, bytes in flight {st['bytes_in_flight']}")
    for what in ("forged_after", "forged_before", "forged_repair", "forged_new_frame",
                 "replayed"):
        assert attacker.counts[what] > 20, attacker.counts
    real = set(naive_split(SAMPLE.read_bytes()))
    assert len(frames) >= 12
    assert all(f in real for f in frames), "a served frame is not one the sender sent"
    # the stream went on: the same stream id, frames completing, nothing corrupt
    assert after["stream_id"] == before["stream_id"] and len(st["streams"]) == 1
    assert after["frames_completed"] - before["frames_completed"] >= 15
    assert after["corrupt"] == 0
    # refusals counted: forgeries verified after the real one or opening a frame (bad_tag),
    # real symbols displacing forgeries held before them (conflict), replays of finished
    # frames (late, no crypto)
    assert errors.get("bad_tag", 0) >= attacker.counts["forged_new_frame"]
    assert errors.get("conflict", 0) > 0
    assert errors.get("late", 0) > 0
    # forgeries made no state: no frame in flight for invented frame ids, one stream
    assert st["bytes_in_flight"] <= 2 * max(len(f) for f in real) + 64


def test_flood_of_forged_symbols_for_live_frames_keeps_delivering(
    procs: Procs, group: str, tmp_path: Path
) -> None:
    key = tmp_path / "cam.key"
    generate_key_file(key, 4)
    http = free_port()
    recv, _send = start(procs, group, key, http)
    before = followed(http)
    rss0 = rss_mb(recv.pid)
    assert before is not None
    attacker = Attacker(group, flood=10_000, seconds=5.0)
    cpu0 = cpu_seconds(recv.pid)
    attacker.start()
    frames = read_stream(http, 5.0)
    attacker.join(15)
    wall = attacker.ended_at - attacker.started_at
    cpu = (cpu_seconds(recv.pid) - cpu0) / max(wall, 0.1)
    time.sleep(0.5)
    st = get(http, "/status")
    after = followed(http)
    assert after is not None
    completed = after["frames_completed"] - before["frames_completed"]
    dropped = sum(after["frames_dropped"].values()) - sum(before["frames_dropped"].values())
    errors = errors_of(st)
    rss1 = rss_mb(recv.pid)
    print(f"flood {dict(attacker.counts)} in {wall:.1f} s; receiver {cpu:.0%} of a core, "
          f"RSS {rss0:.1f} -> {rss1:.1f} MB; completed {completed}, dropped {dropped}, "
          f"served {len(frames)}; errors {errors}; bytes in flight {st['bytes_in_flight']}")
    assert attacker.counts["flood"] > 20_000
    real = set(naive_split(SAMPLE.read_bytes()))
    assert all(f in real for f in frames)
    assert completed >= 15 and completed >= 0.9 * (completed + dropped)
    assert len(frames) >= 12
    assert after["corrupt"] == 0
    assert errors.get("bad_tag", 0) > 1000
    assert cpu < 0.9  # bounded: one tag check per forged symbol at most
    assert rss1 < rss0 + 50
    assert st["bytes_in_flight"] <= 8 * 2 * max(len(f) for f in real)
