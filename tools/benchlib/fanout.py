"""``bench fanout``: how many ``/stream`` clients get >= 99 % of 30 fps, vs a bare asyncio writer.

For N in 10, 100, 300, 1000 clients (one client process, ``fanout_clients.py``, asyncio):

* mcastcam: ``mcastcam-send`` (640x480 webcam recording, 30 fps, loopback multicast) ->
  ``mcastcam-recv --max-clients 1100`` -> N clients of ``/stream``;
* reference: ``tcp_ref.py``, a minimal asyncio writer pushing the same multipart bytes to the
  same N clients from a 30 fps schedule (no multicast, no reassembly, no aiohttp).

A client is *served* when it received >= 99 % of the frames of the measuring window (30 fps
x window). Also the serving process's CPU share of one core over the window
(``/proc/PID/stat``). The client process runs on the same 2-CPU machine: when it cannot read
fast enough, both systems see the same limit (the reference shows where that is).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common as c

HERE = Path(__file__).resolve().parent


def _clients(port: int, n: int, warmup: float, window: float) -> subprocess.Popen[Any]:
    return c.spawn(
        [
            sys.executable,
            str(HERE / "fanout_clients.py"),
            "127.0.0.1",
            str(port),
            str(n),
            f"{warmup:g}",
            f"{window:g}",
        ],
        stdout=subprocess.PIPE,
    )


def _measure(
    server_pid: int, cl: subprocess.Popen[Any], n: int, warmup: float, window: float, fps: float
) -> dict[str, Any]:
    # CPU of the server over the counting window (the client process starts counting after
    # connecting N clients + warmup; we sample at about the same moments).
    connect_guess = 0.5 + n / 500
    time.sleep(connect_guess + warmup)
    cpu0, t0 = c.proc_cpu_s(server_pid), time.monotonic()
    out, _ = cl.communicate(timeout=connect_guess + warmup + window + 120)
    cpu1, t1 = c.proc_cpu_s(server_pid), time.monotonic()
    res = json.loads(out)
    expected = fps * res["window_s"]
    frames = res["frames"]
    served = sum(1 for f in frames if f >= 0.99 * expected)
    core = (cpu1 - cpu0) / (t1 - t0) if cpu0 is not None and cpu1 is not None else None
    return {
        "clients": n,
        "connected": len(frames),
        "failures": res["failures"],
        "served_99": served,
        "expected_frames": expected,
        "min_frames": min(frames) if frames else 0,
        "median_frames": sorted(frames)[len(frames) // 2] if frames else 0,
        "server_core": core,
    }


def run(quick: bool) -> dict[str, Any]:
    src = c.data_file(c.CLIPS["640x480"])
    ns = (10, 100, 300, 1000)
    warmup, window, fps = (2.0, 4.0, 30.0) if quick else (3.0, 10.0, 30.0)
    out: dict[str, Any] = {"clip": src.name, "fps": fps, "window_s": window, "rows": []}
    for n in ns:
        for system in ("mcastcam", "ref"):
            procs: list[subprocess.Popen[Any]] = []
            try:
                http_port = c.free_tcp_port()
                if system == "mcastcam":
                    group = c.next_group()
                    obs = c.Observer("mcastcam", group)
                    port = obs.port
                    obs.close()
                    recv = c.spawn(
                        c.mcastcam_recv_argv(group, port, http_port, max_clients=1100),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    procs.append(recv)
                    c.wait_until(lambda hp=http_port: c._status_ok(hp), 20, "mcastcam-recv")
                    total = int(fps * (warmup + window + 10 + n / 200))
                    procs.append(
                        c.spawn(
                            c.mcastcam_send_argv(src, group, port, fps, total),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
                    server = recv
                    time.sleep(1.0)
                else:
                    server = c.spawn(
                        [
                            sys.executable,
                            str(HERE / "tcp_ref.py"),
                            str(src),
                            f"{fps:g}",
                            str(http_port),
                        ]
                    )
                    procs.append(server)
                    c.wait_until(lambda hp=http_port: _listening(hp), 20, "tcp_ref")
                cl = _clients(http_port, n, warmup, window)
                procs.append(cl)
                row = _measure(server.pid, cl, n, warmup, window, fps)
                mem = c.proc_mem_kb(server.pid)
                row.update(system=system, server_rss_kb=mem.get("VmRSS", 0))
            finally:
                for p in reversed(procs):
                    c.stop(p)
            c.log(
                f"fanout {system:8s} {n:5d} clients: {row['served_99']} served >= 99 %, "
                f"median {row['median_frames']}/{row['expected_frames']:.0f} frames, "
                f"server {row['server_core']} core"
            )
            out["rows"].append(row)
    return out


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
