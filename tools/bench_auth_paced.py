#!/usr/bin/env python3
"""The sender's key cost as the running sender meets it: paced, in real time, A/B in one process.

Issue #12 asks for ≤ 15 % extra sender CPU with a key at 1080×1920 30 fps. ``tools/bench cost
--key-file`` runs the whole programs one after the other, and on this VM a trial's CPU per
frame drifts by ±30 % over a run, more than the effect to measure. Here two
:class:`SenderSession` s, one without and one with a key (AES-128-GCM tags and frame AEAD),
run side by side in one thread for ``--frames`` frames at ``--fps``: both get the same frame
(the median frame of the ``fox`` recording, ≈ 365 kB) at each frame tick, and the loop sleeps
until the earlier of their timers, like the shell, so each pays what pacing costs (the code
runs cold after every sleep) and any drift of the machine hits both alike; which one runs
first at a shared wake-up alternates per frame. Each session's
datagrams leave through its own real UDP socket with GSO (``net.send_datagrams``), multicast
pinned to ``lo`` with TTL 0 (nobody joins the group). CPU is this thread's
(``time.thread_time_ns``) around each session's ``queue_frame``, ``datagrams_to_send`` and
send, per frame. Reports per mode the median ms/frame (and the middle 50 %), and the key's
extra in ms/frame: with a whole-process base from ``tools/bench cost`` it gives the share.

Usage: ``python tools/bench_auth_paced.py [--frames 600] [--fps 30] [--json F]``
Runtime: ``--frames`` / ``--fps`` seconds (20 s by default). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcastcam import net  # noqa: E402
from mcastcam.protocol.frame import CapturedFrame  # noqa: E402
from mcastcam.protocol.repair import FecMode  # noqa: E402
from mcastcam.sender.sources.file import split_mjpeg  # noqa: E402
from tools.bench_auth import sender_session  # noqa: E402

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "fox_1080x1920_420.mjpeg"
MODES = {"nokey": 0x1111, "key": 0x2222}  # mode -> stream id
GROUP = ("239.255.77.9", 47009)  # on lo, TTL 0: never leaves this host


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="raw MJPEG recording")
    p.add_argument("--frames", type=int, default=600, help="frames per mode (1..100000)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if not 1 <= args.frames <= 100_000 or not 1 <= args.fps <= 240:
        p.error("--frames 1..100000, --fps 1..240")
    frames, _ = split_mjpeg(args.file.read_bytes(), args.file.name)
    jpeg = sorted(frames, key=len)[len(frames) // 2]
    lo = net.resolve_interface("lo")
    clock = time.monotonic
    start = clock()
    fec = FecMode()
    modes = {m: sender_session(m, fec, start, stream_id) for m, stream_id in MODES.items()}
    socks = {m: net.open_multicast_sender(lo, 0, False, 4 << 20) for m in modes}
    gso = {m: net.probe_gso(s) for m, s in socks.items()}
    stats = {m: net.SendStats() for m in modes}
    spent = {m: 0 for m in modes}  # thread CPU ns of the current frame
    per_frame: dict[str, list[float]] = {m: [] for m in modes}
    tick = 1 / args.fps
    cpu = time.thread_time_ns
    try:
        for i in range(args.frames + 1):  # the extra tick closes the last frame
            due = start + i * tick
            # who runs first at a shared wake-up alternates per frame: the second one finds
            # the interpreter's and the kernel's shared paths warm
            order = ("nokey", "key") if i % 2 else ("key", "nokey")
            while True:
                now = clock()
                if now >= due:
                    break
                timers = [t for s in modes.values() if (t := s.get_timer()) is not None]
                wake = min([due, *timers])
                if wake > now:
                    time.sleep(wake - now)
                now = clock()
                for m in order:
                    s = modes[m]
                    t = s.get_timer()
                    if t is not None and t <= now:
                        t0 = cpu()
                        s.handle_timer(now)
                        out = s.datagrams_to_send(now)
                        if out:
                            net.send_datagrams(socks[m], GROUP, out, stats[m], gso[m])
                        spent[m] += cpu() - t0
            for m, s in modes.items():
                if i:
                    per_frame[m].append(spent[m] / 1e6)
                spent[m] = 0
                if i < args.frames:
                    t0 = cpu()
                    s.queue_frame(CapturedFrame(jpeg, i, 1), clock())
                    spent[m] += cpu() - t0
    finally:
        for s in socks.values():
            s.close()
    summary: dict[str, object] = {"frame_bytes": len(jpeg), "frames": args.frames}
    print(f"{args.frames} frames of {len(jpeg)} B at {args.fps:g} fps, paced, A/B in one thread")
    for m in modes:
        vals = sorted(per_frame[m])
        q = statistics.quantiles(vals, n=4)
        sent = modes[m].stats.frames_sent
        summary[m] = {"median_ms": statistics.median(vals), "q1_ms": q[0], "q3_ms": q[2],
                      "mean_ms": statistics.fmean(vals), "frames_sent": sent,
                      "datagrams": stats[m].sent}
        print(f"  {m:6s} {statistics.median(vals):.3f} ms/frame [q1 {q[0]:.3f}, q3 {q[2]:.3f}], "
              f"mean {statistics.fmean(vals):.3f}; {sent} frames, {stats[m].sent} datagrams")
    extra = [k - n for n, k in zip(per_frame["nokey"], per_frame["key"], strict=True)]
    q = statistics.quantiles(extra, n=4)
    summary["extra_ms"] = {"median": statistics.median(extra), "q1": q[0], "q3": q[2],
                           "mean": statistics.fmean(extra)}
    print(f"  key extra {statistics.median(extra):+.3f} ms/frame (per-frame pairs: q1 {q[0]:+.3f},"
          f" q3 {q[2]:+.3f}; mean {statistics.fmean(extra):+.3f})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
