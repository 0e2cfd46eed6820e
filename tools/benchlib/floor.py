"""The floor of a CPython datagram path at 30 fps: what a frame costs before any protocol work.

    .venv/bin/python tools/benchlib/floor.py [--frames 150] [--repeat 3]

Issue #13 asks for mcastcam's CPU per frame at <= 0.5x GStreamer's at 720p and 1080p. This
measures how much of that budget CPython spends on the bare I/O path, with no mcastcam code
in the loop but the socket helpers of ``mcastcam.net`` (GSO/GRO on):

* **send**: a child process sends ``k`` datagrams of 1,472 bytes (48-byte header + T = 1,424)
  per frame at 30 fps, in ``bursts`` GSO calls spread over half the frame interval like
  ``mcastcam-send --spread 0.5`` (one burst at 640x480 and 720p); each datagram is made the
  cheapest possible way (``struct.pack_into`` of a 4-byte counter into a header template, the
  payload a memoryview slice of the frame): its CPU per frame;
* **recv**: this process receives them with ``UDP_GRO``, splits every coalesced buffer by the
  segment size and copies each payload into a frame buffer (the least any reassembler does),
  either in a blocking ``recvmsg_into`` loop (``block``) or from an asyncio reader callback
  on the default loop (``asyncio``, what ``mcastcam.driver.Driver`` does around its core).

CPU = ``getrusage`` user + system from the first datagram to the last, per frame (the
receiver's idle time between frames costs nothing; wake-ups do). Median of ``--repeat`` runs.
Network: group 239.255.x.y joined on 127.0.0.1 only, sender on ``lo`` with TTL 0; bounded:
``--frames`` frames and a 30 s timeout per run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcastcam import net

HEADER = 48
T = 1_424
#: k (datagrams per frame) and GSO bursts per frame: the medians of ``tools/bench cost``'s
#: frames (640x480 9.5, 720p 32, 1080x1920 163 datagrams) and the pacer's bursts at 30 fps.
CASES = {"640x480": (10, 1), "720p": (32, 1), "1080x1920": (163, 4)}
GROUP = f"239.255.{(os.getpid() % 200) + 40}.19"
FPS = 30.0
_SEQ = struct.Struct("!I")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sender(port: int, k: int, bursts: int, n: int, out: Any) -> None:
    lo = net.resolve_interface("lo")
    payload = memoryview(os.urandom(k * T))
    template = bytearray(HEADER)
    per = -(-k // bursts)
    with net.open_multicast_sender(lo, 0, True, 4 << 20) as tx:
        gso = net.probe_gso(tx, True)
        stats = net.SendStats()
        cpu = 0.0
        seq = 0
        start = time.monotonic() + 0.2
        for i in range(n):
            time.sleep(max(0.0, start + i / FPS - time.monotonic()))
            for b in range(bursts):
                t0 = _cpu()
                burst: list[tuple[bytes, memoryview]] = []
                for esi in range(b * per, min(k, (b + 1) * per)):
                    _SEQ.pack_into(template, 10, seq)
                    seq += 1
                    burst.append((bytes(template), payload[esi * T : (esi + 1) * T]))
                done = 0
                for _ in range(200):  # bounded retries on a full socket buffer
                    done += net.send_datagrams(tx, (GROUP, port), burst[done:], stats, gso)
                    if done == len(burst):
                        break
                    time.sleep(0.0005)
                cpu += _cpu() - t0
                if b + 1 < bursts:
                    time.sleep(0.5 / FPS / bursts)
        out.put((cpu / n, gso.describe()))


def _blocking(rx: socket.socket, k: int, n: int) -> tuple[float, int]:
    buf = bytearray(65_536)
    view = memoryview(buf)
    frame = memoryview(bytearray(k * T))
    got, first = 0, None
    rx.settimeout(2.0)
    try:
        while got < k * n:
            size, anc, _flags, _addr = rx.recvmsg_into([buf], 256)
            if first is None:
                first = _cpu()
            seg = net.gro_segment_size(anc) or size
            for off in range(0, size, seg):
                i = got % k
                frame[i * T : (i + 1) * T] = view[off + HEADER : off + HEADER + T]
                got += 1
    except TimeoutError:
        pass
    return _cpu() - (first or _cpu()), got


async def _asyncio(rx: socket.socket, k: int, n: int) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    buf = bytearray(65_536)
    view = memoryview(buf)
    frame = memoryview(bytearray(k * T))
    state: dict[str, Any] = {"got": 0, "first": None}
    finished = loop.create_future()
    rx.setblocking(False)

    def on_readable() -> None:
        for _ in range(64):  # the Driver's bounded batch
            try:
                size, anc, _flags, _addr = rx.recvmsg_into([buf], 256)
            except BlockingIOError:
                return
            if state["first"] is None:
                state["first"] = _cpu()
            seg = net.gro_segment_size(anc) or size
            got = state["got"]
            for off in range(0, size, seg):
                i = got % k
                frame[i * T : (i + 1) * T] = view[off + HEADER : off + HEADER + T]
                got += 1
            state["got"] = got
            if got >= k * n and not finished.done():
                finished.set_result(None)

    loop.add_reader(rx.fileno(), on_readable)
    try:
        await asyncio.wait_for(finished, 30)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(rx.fileno())
    return _cpu() - (state["first"] or _cpu()), state["got"]


def run_once(mode: str, k: int, bursts: int, n: int) -> dict[str, Any]:
    lo = net.resolve_interface("lo")
    rx = net.open_multicast_receiver(GROUP, 0, lo, 4 << 20)
    try:
        net.enable_gro(rx, True)
        q: Any = mp.get_context("fork").Queue()
        child = mp.get_context("fork").Process(
            target=_sender, args=(rx.getsockname()[1], k, bursts, n, q)
        )
        child.start()
        if mode == "block":
            cpu, got = _blocking(rx, k, n)
        else:
            cpu, got = asyncio.run(_asyncio(rx, k, n))
        send_cpu, gso = q.get(timeout=30)
        child.join(10)
    finally:
        rx.close()
    return {"recv_us": cpu / n * 1e6, "send_us": send_cpu * 1e6, "got": got, "expected": k * n,
            "gso": gso}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if not 1 <= a.frames <= 3000 or not 1 <= a.repeat <= 9:
        p.error("--frames 1..3000, --repeat 1..9")
    print(f"frames {a.frames}, repeat {a.repeat}, 30 fps, us of CPU per frame, median (range); "
          f"loadavg {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| frames | k | bursts | send | recv, blocking | recv, asyncio | lost |")
    print("|---|---|---|---|---|---|---|")
    for name, (k, bursts) in CASES.items():
        rows: dict[str, list[dict[str, Any]]] = {"block": [], "asyncio": []}
        for _ in range(a.repeat):
            for mode in rows:
                rows[mode].append(run_once(mode, k, bursts, a.frames))

        def cell(values: list[float]) -> str:
            return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

        sends = [r["send_us"] for rs in rows.values() for r in rs]
        lost = sum(r["expected"] - r["got"] for rs in rows.values() for r in rs)
        print(f"| {name} | {k} | {bursts} | {cell(sends)} | "
              f"{cell([r['recv_us'] for r in rows['block']])} | "
              f"{cell([r['recv_us'] for r in rows['asyncio']])} | {lost} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
