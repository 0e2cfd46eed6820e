"""``bench latency``: sender hand-off -> frame complete -> HTTP part at a client, at 30 fps.

The receiver runs **in this process** on the same code path as ``mcastcam-recv``
(``net.open_multicast_receiver`` + ``ReceiverSession`` + ``FrameHub`` + ``ReceiverApp`` +
``start_http``) with one hook: a ``FrameHub`` subclass notes ``time.time_ns()`` and
``time.monotonic_ns()`` on entry to ``publish`` (frame complete = its last fragment
arrived and the session handed the reassembled frame to the hub, before DHT check and
writes). The sender is the real
``mcastcam-send`` CLI (a subprocess), 30 fps, sending the original 720p recording.

* hand-off -> complete: completion ``time.time_ns()`` minus the frame's wire
  ``capture_ts_ns`` (the wall-clock time the file source handed the frame to the sender;
  same host, same clock). It includes the sender's pacing: with ``--spread 0.5`` a frame's
  datagrams are spread over half the frame interval (16.7 ms at 30 fps); ``--spread 0``
  sends each frame as one burst. Both are measured.
* complete -> HTTP part: a client subprocess (``latency_client.py``) reads ``/stream`` on a
  plain socket and notes ``time.monotonic_ns()`` when the last byte of each JPEG arrived;
  minus the completion ``monotonic_ns``. This is an upper bound of "part written": it adds
  the loopback TCP hop and the client's wake-up.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common as c


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50": _pct(xs, 0.5),
        "p99": _pct(xs, 0.99),
        "max": max(xs) if xs else None,
        "mean": statistics.fmean(xs) if xs else None,
    }


async def _one(path: Path, count: int, spread: float) -> dict[str, Any]:
    from mcastcam import net
    from mcastcam.protocol.frame import Frame
    from mcastcam.protocol.reassembly import ReassemblyLimits
    from mcastcam.protocol.receiver import ReceiverSession
    from mcastcam.receiver.app import ReceiverApp
    from mcastcam.receiver.fanout import FrameHub
    from mcastcam.receiver.http import start_http

    marks: dict[int, tuple[int, int, int]] = {}  # fid -> (mono_ns, wall_ns, capture_ts_ns)

    class HookedHub(FrameHub):
        def publish(self, frame: Frame) -> Frame | None:
            mono, wall = time.monotonic_ns(), time.time_ns()
            marks[frame.frame_id] = (mono, wall, frame.capture_ts_ns)
            return super().publish(frame)

    group = c.next_group()
    sock = net.open_multicast_receiver(group, 0, net.resolve_interface("lo"), c.RCVBUF)
    port = sock.getsockname()[1]
    hub = HookedHub()
    app = ReceiverApp(ReceiverSession(ReassemblyLimits()), hub)
    await app.attach(sock)
    http = await start_http(hub, "127.0.0.1", 0)
    seconds = count / 30 + 3
    client = c.spawn(
        [
            sys.executable,
            str(Path(__file__).with_name("latency_client.py")),
            "127.0.0.1",
            str(http.port),
            f"{seconds:g}",
        ],
        stdout=subprocess.PIPE,
    )
    send = None
    try:
        await asyncio.sleep(0.5)
        send = c.spawn(
            c.mcastcam_send_argv(path, group, port, 30, count, spread=spread),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + seconds + 20
        while client.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        out = client.stdout.read() if client.poll() is not None else b"{}"
        arrived = {int(k): v for k, v in json.loads(out or b"{}").items()}
    finally:
        for p in (send, client):
            if p is not None:
                c.stop(p)
        await http.close()
        app.close()
        sock.close()
    handoff = [(w - cap) / 1e6 for (_, w, cap) in marks.values()]
    relay = [(arrived[f] - m) / 1e6 for f, (m, _, _) in marks.items() if f in arrived]
    return {
        "spread": spread,
        "frames_completed": len(marks),
        "frames_at_client": len(relay),
        "handoff_ms": summary(handoff),
        "relay_ms": summary(relay),
        "handoff_samples": handoff,
        "relay_samples": relay,
    }


def run(quick: bool) -> dict[str, Any]:
    path = c.data_file(c.CLIPS["720p"])
    count = 150 if quick else 900
    out: dict[str, Any] = {"clip": path.name, "fps": 30, "count": count, "runs": []}
    for spread in (0.5, 0.0):
        r = asyncio.run(_one(path, count, spread))
        c.log(
            f"latency spread {spread}: hand-off->complete {r['handoff_ms']}, "
            f"complete->client {r['relay_ms']}"
        )
        out["runs"].append(r)
    return out
