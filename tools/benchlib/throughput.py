"""``bench throughput``: the highest zero-loss frame rate, mcastcam vs GStreamer RTP/JPEG.

For each resolution, the frame rate climbs a ladder; at each step the two systems run one
after the other (A B, the order swapped at every step, so neither always runs on a warmer
machine), ``rounds`` times. A step passes for a system when, in every round, its receiver
delivered every frame (``mcastcam-recv`` ``/status`` ``frames_completed``; GStreamer: whole
JPEGs out of ``rtpjpegdepay``) and the observer saw the frames arrive at >= 90 % of the asked
rate. A system leaves the ladder at its first failure; its figure is the last step passed.
Both are fed the same RTP-compatible frames (:func:`common.prepare`).
"""

from __future__ import annotations

from typing import Any

from . import common as c

LADDER_FULL = (30, 60, 90, 120, 180, 240, 360, 480, 720, 960, 1440, 1920, 3840, 7680)
MCASTCAM_MAX_FPS = 10000  # mcastcam-send refuses --fps above this
LADDER_QUICK = (30, 60, 120, 240, 480, 960, 1920, 3840, 7680)


def run(quick: bool, clips: tuple[str, ...] = ("640x480", "720p", "1080p")) -> dict[str, Any]:
    ladder = LADDER_QUICK if quick else LADDER_FULL
    rounds = 1 if quick else 2
    seconds = 1.5 if quick else 3.0
    out: dict[str, Any] = {
        "ladder": ladder,
        "rounds": rounds,
        "seconds_per_step": seconds,
        "clips": {},
    }
    flip = False
    for clip in clips:
        path = c.prepare(clip)
        alive = {"mcastcam": True, "gst": True}
        best: dict[str, float | None] = {"mcastcam": None, "gst": None}
        capped = {"mcastcam": False, "gst": False}
        trials: list[dict[str, Any]] = []
        for fps in ladder:
            if not any(alive.values()):
                break
            count = max(45, int(fps * seconds))
            for _ in range(rounds):
                order = ["gst", "mcastcam"] if flip else ["mcastcam", "gst"]
                flip = not flip
                for system in order:
                    if not alive[system]:
                        continue
                    if system == "mcastcam" and fps > MCASTCAM_MAX_FPS:
                        capped[system] = True
                        alive[system] = False
                        continue
                    t = c.run_trial(system, clip, path, fps, count, warmup_s=0.3)
                    trials.append(t.row())
                    c.log(
                        f"throughput {clip} {system:8s} {fps:5d} fps x{count}: delivered "
                        f"{t.delivered}, {t.achieved_fps:.0f} fps achieved, "
                        f"{'PASS' if t.zero_loss else 'FAIL'} skipped={t.sender_skipped} {t.note}"
                    )
                    if not t.zero_loss:
                        alive[system] = False
            for system in alive:
                if alive[system]:
                    best[system] = fps
        ratio = (best["mcastcam"] / best["gst"]) if best["mcastcam"] and best["gst"] else None
        out["clips"][clip] = {
            "file": str(path),
            "best": best,
            "ratio": ratio,
            # True: passed the top of the ladder, or the CLI's --fps limit
            "ceiling": {s: alive[s] or capped[s] for s in alive},
            "trials": trials,
        }
    return out
