"""``bench memory``: receiver RSS at idle, at 1080p30, and under a garbage flood; both systems.

Stages, one receiver process per system (``mcastcam-recv`` / ``gst-launch-1.0 udpsrc !
rtpjpegdepay ! fdsink``), RSS sampled every 0.1 s from ``/proc/PID/status`` (max ``VmRSS`` of
the stage; ``VmHWM`` at the end):

1. idle: 2 s after start, nothing sent;
2. 1080p30: the sender of that system sends the 1080x1920 frames at 30 fps (mcastcam: the
   original recording; GStreamer: the RTP-compatible copy, which it can carry);
3. flood: while the 1080p30 stream goes on, this process sends ``n`` datagrams as fast as
   it can to the same group (``lo``, TTL 0): one third random bytes (1..1472), one third
   random bytes behind a valid RTP version-2 first byte, one third well-formed mcastcam
   fragment headers for frames of ~16 MiB under random stream and frame ids (each would
   open a reassembly slot: the worst case for memory). The same datagrams go to both.
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from typing import Any

from mcastcam.protocol.codec import SYMBOL_HEADER
from mcastcam.protocol.wire import MAGIC, VERSION, Kind

from . import common as c


def garbage(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    count, plen = 12000, 1392  # frame_len 16,704,000 B: just under the 16 MiB default limit
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(rnd.randbytes(rnd.randint(1, 1472)))
        elif kind == 1:
            out.append(bytes([0x80, 26]) + rnd.randbytes(rnd.randint(10, 1400)))
        else:
            idx = rnd.randrange(count)
            hdr = SYMBOL_HEADER.pack(  # a v2 source symbol of a huge frame without FEC
                MAGIC,
                VERSION,
                int(Kind.SOURCE),
                0,
                rnd.getrandbits(32),
                rnd.getrandbits(32),
                rnd.getrandbits(32),
                idx,
                plen,
                count * plen,
                rnd.getrandbits(32),
                rnd.getrandbits(63),
                0,
                0,
                0,
                rnd.getrandbits(32) | 1,
            )
            out.append(hdr + bytes(plen))
    return out


def flood(group: str, port: int, datagrams: list[bytes]) -> float:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        t0 = time.monotonic()
        for d in datagrams:
            try:
                s.sendto(d, (group, port))
            except OSError:
                time.sleep(0.001)
        return time.monotonic() - t0
    finally:
        s.close()


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.max_kb = 0
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.stop_ev.wait(0.1):
            self.max_kb = max(self.max_kb, c.proc_mem_kb(self.pid).get("VmRSS", 0))


def _stage(pid: int, action: Any) -> dict[str, Any]:
    smp = RssSampler(pid)
    smp.start()
    try:
        extra = action()
    finally:
        smp.stop_ev.set()
        smp.join()
    mem = c.proc_mem_kb(pid)
    return {
        "max_rss_kb": max(smp.max_kb, mem.get("VmRSS", 0)),
        "hwm_kb": mem.get("VmHWM", 0),
        **(extra or {}),
    }


def run(quick: bool) -> dict[str, Any]:
    n = 60_000 if quick else 300_000
    frames = 150 if quick else 450
    data = garbage(n)
    originals = {"mcastcam": c.data_file(c.CLIPS["1080p"]), "gst": c.prepare("1080p")}
    out: dict[str, Any] = {"flood_datagrams": n, "frames": frames, "systems": {}}
    for system in ("mcastcam", "gst"):
        group = c.next_group()
        obs = c.Observer(system, group)
        port = obs.port
        procs: list[subprocess.Popen[Any]] = []
        counter = None
        http_port = c.free_tcp_port()
        try:
            if system == "mcastcam":
                recv = c.spawn(
                    c.mcastcam_recv_argv(group, port, http_port),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                c.wait_until(lambda: c._status_ok(http_port), 20, "mcastcam-recv")  # noqa: B023
            else:
                recv = c.spawn(
                    c.gst_recv_argv(group, port), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                )
                counter = c.JpegCounter(recv.stdout)
                counter.start()
            procs.append(recv)
            c.wait_until(lambda: c.udp_sockets_on(port) >= 2, 20, "receiver socket")  # noqa: B023
            res: dict[str, Any] = {}
            res["idle"] = _stage(recv.pid, lambda: time.sleep(2.0))
            path = originals[system]
            argv = (
                c.mcastcam_send_argv(path, group, port, 30, frames * 2)
                if system == "mcastcam"
                else c.gst_send_argv(path, group, port, 30, frames * 2)
            )
            send = c.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(send)
            res["1080p30"] = _stage(recv.pid, lambda: time.sleep(frames / 30))
            res["flood"] = _stage(recv.pid, lambda: {"flood_s": flood(group, port, data)})  # noqa: B023
            time.sleep(1.0)
            res["after"] = {
                "rss_kb": c.proc_mem_kb(recv.pid).get("VmRSS", 0),
                "alive": recv.poll() is None,
            }
            if system == "mcastcam":
                st = c.http_json(f"http://127.0.0.1:{http_port}/status")
                res["status"] = {k: st.get(k) for k in ("decode_errors", "bytes_in_flight")}
                res["status"]["frames_dropped"] = [
                    s.get("frames_dropped") for s in st["streams"] if s.get("followed")
                ]
            out["systems"][system] = res
            c.log(f"memory {system}: {res}")
        finally:
            obs.close()
            for p in reversed(procs):
                c.stop(p)
    return out
