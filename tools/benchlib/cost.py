"""``bench cost``: CPU seconds per frame, sender and receiver, both systems, at 30 fps.

Same frames, same count, rounds alternating A B / B A. CPU is utime + stime of each process
(``/proc/PID/stat``), over the steady part of the run (from 1 s after the first frame to the
end), divided by the frames that started in that window. The observer also records each
frame's first-to-last datagram span (how long a frame takes on the wire).
"""

from __future__ import annotations

import concurrent.futures
import statistics
from typing import Any

from . import common as c


def run(
    quick: bool, clips: tuple[str, ...] = ("640x480", "720p", "1080p"), fps: float = 30.0
) -> dict[str, Any]:
    count = 150 if quick else 450
    rounds = 1 if quick else 3
    out: dict[str, Any] = {"fps": fps, "count": count, "rounds": rounds, "clips": {}}
    flip = False
    for clip in clips:
        path = c.prepare(clip)
        rows: dict[str, list[dict[str, Any]]] = {"mcastcam": [], "gst": []}
        spans: dict[str, list[float]] = {"mcastcam": [], "gst": []}
        for _ in range(rounds):
            order = ["gst", "mcastcam"] if flip else ["mcastcam", "gst"]
            flip = not flip
            for system in order:
                t = c.run_trial(system, clip, path, fps, count)
                rows[system].append(t.row())
                spans[system].extend(t.span_ms)
                c.log(
                    f"cost {clip} {system:8s}: send {t.send_cpu_per_frame_ms} ms/frame, "
                    f"recv {t.recv_cpu_per_frame_ms} ms/frame, delivered {t.delivered}/"
                    f"{count} {t.note}"
                )
        summary: dict[str, Any] = {}
        for system, rs in rows.items():
            send = [r["send_cpu_per_frame_ms"] for r in rs if r["send_cpu_per_frame_ms"]]
            recv = [r["recv_cpu_per_frame_ms"] for r in rs if r["recv_cpu_per_frame_ms"]]
            summary[system] = {
                "send_ms": statistics.median(send) if send else None,
                "recv_ms": statistics.median(recv) if recv else None,
                "delivered": [r["delivered"] for r in rs],
                "datagrams_per_frame": rs[0]["datagrams_per_frame"] if rs else None,
                "span_ms": spans[system],
            }
        m, g = summary["mcastcam"], summary["gst"]
        summary["send_ratio"] = (
            m["send_ms"] / g["send_ms"] if m["send_ms"] and g["send_ms"] else None
        )
        summary["recv_ratio"] = (
            m["recv_ms"] / g["recv_ms"] if m["recv_ms"] and g["recv_ms"] else None
        )
        summary["trials"] = rows
        out["clips"][clip] = summary
    return out


def _key_trial(
    clip: str,
    path: Any,
    fps: float,
    count: int,
    mode: str,
    extra_args: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> None:
    t = c.run_trial("mcastcam", clip, path, fps, count, extra_args=extra_args)
    rows.append(t.row())
    c.log(
        f"cost {clip} {mode:5s}: send {t.send_cpu_per_frame_ms} ms/frame, "
        f"recv {t.recv_cpu_per_frame_ms} ms/frame, delivered {t.delivered}/{count} {t.note}"
    )


def run_key(
    quick: bool,
    key_file: str,
    clips: tuple[str, ...] = ("1080p",),
    fps: float = 30.0,
    rounds: int | None = None,
    parallel: bool = False,
) -> dict[str, Any]:
    """``bench cost --key-file K``: mcastcam without and with ``--key-file K`` (issue #12).

    Rounds alternate A B / B A (no key first, then key first, ...), same frames and count;
    CPU per frame as :func:`run`. Reports per mode the median and range of each side's
    ms/frame, and the key's extra over no key in % of each side's own CPU: from the medians
    (``*_extra_pct``) and as the median of each round's own key / no-key ratio
    (``*_extra_paired_pct``: the two trials of a round ran back to back, so a drift of the
    machine's speed over the run, ±30 % here, cancels out of it). ``rounds``: default 4
    (2 with ``quick``). ``parallel``: the two trials of a round run at the same time (two
    senders and two receivers on their own groups), so both meet the same machine; their
    four processes share the cores, so absolute figures are higher than one at a time.
    """
    count = 150 if quick else 240
    if rounds is None:
        rounds = 2 if quick else 4
    out: dict[str, Any] = {
        "fps": fps,
        "count": count,
        "rounds": rounds,
        "parallel": parallel,
        "clips": {},
    }
    modes = {"nokey": (), "key": ("--key-file", key_file)}
    for clip in clips:
        path = c.prepare(clip)
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for i in range(rounds):
            order = list(modes) if i % 2 == 0 else list(modes)[::-1]
            jobs = [(clip, path, fps, count, mode, modes[mode], rows[mode]) for mode in order]
            if parallel:
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    for future in [pool.submit(_key_trial, *job) for job in jobs]:
                        future.result()
            else:
                for job in jobs:
                    _key_trial(*job)
        summary: dict[str, Any] = {}
        for mode, rs in rows.items():
            entry: dict[str, Any] = {"delivered": [r["delivered"] for r in rs]}
            for side in ("send", "recv"):
                vals = [r[f"{side}_cpu_per_frame_ms"] for r in rs if r[f"{side}_cpu_per_frame_ms"]]
                entry[f"{side}_ms"] = statistics.median(vals) if vals else None
                entry[f"{side}_range"] = [min(vals), max(vals)] if vals else None
            summary[mode] = entry
        for side in ("send", "recv"):
            a, b = summary["nokey"][f"{side}_ms"], summary["key"][f"{side}_ms"]
            summary[f"{side}_extra_pct"] = round(100 * (b / a - 1), 1) if a and b else None
            key = f"{side}_cpu_per_frame_ms"
            ratios = [
                k[key] / n[key] - 1
                for n, k in zip(rows["nokey"], rows["key"], strict=True)
                if n[key] and k[key]
            ]
            summary[f"{side}_extra_paired_pct"] = (
                round(100 * statistics.median(ratios), 1) if ratios else None
            )
            summary[f"{side}_extra_paired_range"] = (
                [round(100 * min(ratios), 1), round(100 * max(ratios), 1)] if ratios else None
            )
        summary["trials"] = rows
        out["clips"][clip] = summary
        c.log(
            f"cost {clip}: key extra send {summary['send_extra_pct']} %, "
            f"recv {summary['recv_extra_pct']} % (medians of {rounds}); per round "
            f"send {summary['send_extra_paired_pct']} % {summary['send_extra_paired_range']}, "
            f"recv {summary['recv_extra_paired_pct']} % {summary['recv_extra_paired_range']}"
        )
    return out
