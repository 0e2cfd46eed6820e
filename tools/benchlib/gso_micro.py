"""UDP GSO/GRO and uvloop, I/O path only, on loopback multicast (issue #13).

    .venv/bin/python tools/benchlib/gso_micro.py [--frames 300] [--repeat 3]

For three frame sizes (the median frames of the 640x480, 720p and 1080p recordings of
``tools/bench``: 6,999, 33,446 and 363,504 bytes, cut by the real fragmenter at MTU 1,500)
and each combination of {GSO+GRO, neither} x {asyncio, uvloop}:

* a child process sends ``--frames`` frames, each as one ``send_datagrams`` call (one pacer
  burst per frame), 5 ms apart, and reports its CPU time per frame (``time.process_time``);
* this process receives them with :class:`mcastcam.driver.Driver` (GRO on or off) on the
  chosen event loop, into a core that only counts datagrams and bytes, and reports its CPU
  time per frame (``resource.getrusage``) from the first datagram to the last.

Medians of ``--repeat`` runs, microseconds per frame. The reassembly and serving work is the
same in both modes and is left out on purpose: this isolates what GSO/GRO and the loop change.
Network: group 239.255.x.y joined on 127.0.0.1, sender on ``lo`` with TTL 0.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcastcam import net
from mcastcam.driver import Driver
from mcastcam.protocol.fragmenter import fragment_frame, max_payload_for_mtu

SIZES = {"640x480": 6_999, "720p": 33_446, "1080p": 363_504}
GROUP = f"239.255.{(os.getpid() % 200) + 40}.9"


def _frames(size: int, n: int) -> list[list[Any]]:
    payload = os.urandom(size)
    mp_ = max_payload_for_mtu(1500)
    return [
        fragment_frame(payload, stream_id=1, first_seq=i * 1000, frame_id=i,
                       capture_ts_ns=0, max_payload=mp_)
        for i in range(n)
    ]  # fmt: skip


def _sender(port: int, size: int, n: int, gso_on: bool, out: Any) -> None:
    lo = net.resolve_interface("lo")
    frames = _frames(size, n)
    with net.open_multicast_sender(lo, 0, True, 4 << 20) as tx:
        gso = net.probe_gso(tx, gso_on)
        stats = net.SendStats()
        cpu = 0.0
        for datagrams in frames:
            t0 = time.process_time()
            done = 0
            for _ in range(1000):  # bounded retries on a full socket
                done += net.send_datagrams(tx, (GROUP, port), datagrams[done:], stats, gso)
                if done == len(datagrams):
                    break
                time.sleep(0.0005)
            cpu += time.process_time() - t0
            time.sleep(0.005)
        out.put((cpu / n, stats.sent, stats.gso_calls, gso.describe()))


class _Counter:
    def __init__(self) -> None:
        self.datagrams = 0
        self.bytes = 0
        self.first: float | None = None
        self.last = 0.0

    def receive_datagram(self, data: memoryview, addr: Any, now: float) -> None:
        if self.first is None:
            self.first = _cpu()
        self.datagrams += 1
        self.bytes += len(data)
        self.last = _cpu()

    # Nothing to send, no timer: the Driver's other verbs are no-ops here.
    datagrams_to_send = staticmethod(lambda now: [])
    get_timer = staticmethod(lambda: None)
    handle_timer = staticmethod(lambda now: None)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _receive(size: int, n: int, offload: bool) -> dict[str, Any]:
    lo = net.resolve_interface("lo")
    rx = net.open_multicast_receiver(GROUP, 0, lo, 4 << 20)
    port = rx.getsockname()[1]
    gro = net.enable_gro(rx, offload)
    core = _Counter()
    driver = Driver(core, lambda out: None, sock=rx, gro=gro.enabled)
    driver.start()
    q: Any = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_sender, args=(port, size, n, offload, q))
    child.start()
    expected = n * len(_frames(size, 1)[0])
    deadline = time.monotonic() + 60
    while core.datagrams < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if not child.is_alive() and core.datagrams < expected:
            await asyncio.sleep(0.5)
            break
    send_cpu, sent, calls, gso = q.get(timeout=30)
    child.join(10)
    driver.close()
    rx.close()
    recv_cpu = (core.last - (core.first or core.last)) / n
    return {
        "send_us": send_cpu * 1e6, "recv_us": recv_cpu * 1e6, "received": core.datagrams,
        "expected": expected, "sent": sent, "gso_calls": calls, "gso": gso,
        "gro": gro.describe(), "gro_buffers": driver.gro_buffers,
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    loops = ["asyncio"]
    try:
        import uvloop

        loops.append("uvloop")
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    print(f"frames {a.frames}, repeat {a.repeat}, median us/frame (send, recv); loadavg "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    for clip, size in SIZES.items():
        for loop_name in loops:
            for offload in (True, False):
                rows = []
                for _ in range(a.repeat):
                    if loop_name == "uvloop":
                        assert uvloop is not None
                        r = uvloop.run(_receive(size, a.frames, offload))
                    else:
                        r = asyncio.run(_receive(size, a.frames, offload))
                    rows.append(r)
                send = statistics.median(r["send_us"] for r in rows)
                recv = statistics.median(r["recv_us"] for r in rows)
                spread = [round(r["recv_us"]) for r in rows]
                lost = sum(r["expected"] - r["received"] for r in rows)
                print(
                    f"{clip:8s} {loop_name:8s} {'gso+gro' if offload else 'plain  '} "
                    f"send {send:7.1f}  recv {recv:7.1f}  (recv runs {spread}, lost {lost}, "
                    f"gso_calls/frame {rows[0]['gso_calls'] / a.frames:.1f}, gro_buffers "
                    f"{rows[0]['gro_buffers']})",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
