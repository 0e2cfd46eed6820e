"""``bench loss``: frames delivered complete under random datagram loss, in the netns lab.

Two network namespaces on a bridge (``tools/netlab.py``, 1,500-byte MTU); host 0 sends,
host 1 receives; loss is nftables ``numgen random`` on host 1's input hook (every UDP
datagram, heartbeats and RTP alike), at 0 %, 0.5 %, 1 %, 2 %, 5 %. Both systems send the
same RTP-compatible 720p frames at 30 fps, neither repairs loss. Delivered = frames the
receiver completed (``mcastcam-recv`` ``/status`` read with curl inside host 1; GStreamer:
whole JPEGs out of ``rtpjpegdepay`` with the right scan length). Expectation: the mean over
frames of (1-p)^k, k = datagrams of that frame (counted on loopback by the observer).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from . import common as c

RATES = (0, 50, 100, 200, 500)  # per ten thousand


def _expect(ks: list[int], p: float) -> float:
    return sum((1 - p) ** k for k in ks) / len(ks) if ks else float("nan")


def run(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(c.ROOT / "tools"))
    import netlab

    why = netlab.available()
    if why:
        raise c.Skip(f"netns lab unavailable: {why}")
    clip = "720p"
    path = c.prepare(clip)
    count = 150 if quick else 900
    # k per frame, measured on loopback (same frames, same MTU)
    ks = {s: c.run_trial(s, clip, path, 30, 300).k_list for s in ("mcastcam", "gst")}
    out: dict[str, Any] = {
        "clip": clip,
        "count": count,
        "rows": [],
        "k_mean": {s: sum(v) / len(v) for s, v in ks.items() if v},
    }
    env = {"PYTHONPATH": str(c.CODE)}
    with netlab.Lab(hosts=2) as lab:
        h0, h1 = lab.host(0), lab.host(1)
        for permyriad in RATES:
            lab.set_loss(1, permyriad)
            p = permyriad / 10000
            for system in ("mcastcam", "gst"):
                group, port = c.next_group(), 5004
                procs: list[subprocess.Popen[Any]] = []
                counter = None
                try:
                    if system == "mcastcam":
                        http = 8080
                        recv = c.spawn(
                            [
                                "env",
                                f"PYTHONPATH={env['PYTHONPATH']}",
                                *h1.command(c.mcastcam_recv_argv(group, port, http, iface="eth0")),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        procs.append(recv)
                        c.wait_until(
                            lambda: (
                                h1.run(
                                    ["curl", "-sf", f"http://127.0.0.1:{http}/status"], check=False  # noqa: B023
                                ).returncode
                                == 0
                            ),
                            20,
                            "recv",
                        )
                        send_argv = c.mcastcam_send_argv(
                            path, group, port, 30, count, iface="eth0", ttl=1
                        )
                    else:
                        recv = c.spawn(
                            h1.command(c.gst_recv_argv(group, port, "eth0")),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                        )
                        procs.append(recv)
                        counter = c.JpegCounter(recv.stdout, c.valid_scans(path))
                        counter.start()
                        time.sleep(1.0)
                        send_argv = c.gst_send_argv(
                            path, group, port, 30, count, bind=h0.address, ttl=1
                        )
                    send = c.spawn(
                        ["env", f"PYTHONPATH={env['PYTHONPATH']}", *h0.command(send_argv)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    procs.append(send)
                    send.wait(timeout=count / 30 + 60)
                    time.sleep(1.5)
                    if system == "mcastcam":
                        st = json.loads(
                            h1.run(["curl", "-sf", f"http://127.0.0.1:{http}/status"]).stdout
                        )
                        delivered = sum(s["frames_completed"] for s in st["streams"])
                    c.stop(recv)
                    if counter is not None:
                        counter.join(5)
                        delivered = counter.frames
                finally:
                    for pr in reversed(procs):
                        c.stop(pr)
                row = {
                    "system": system,
                    "loss": p,
                    "sent": count,
                    "delivered": delivered,
                    "fraction": delivered / count,
                    "expected": _expect(ks[system], p),
                    "dropped_by_nft": lab.loss_counter(1),
                }
                c.log(
                    f"loss {p:.3%} {system:8s}: {delivered}/{count} "
                    f"(expected {row['expected']:.3f})"
                )
                out["rows"].append(row)
    return out
