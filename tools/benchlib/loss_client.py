"""Reads a receiver's raw TCP re-serve; checks every frame byte for byte and times it.

    python loss_client.py HOST PORT FRAMES.mjpeg SECONDS

Runs in the receiver's namespace (``bench loss``) on the project's interpreter with mcastcam
importable (``mcastcam.client.iter_frames``). A frame is *exact* when its JPEG is
byte-identical to one of the frames of FRAMES.mjpeg (SHA-256), else *corrupt*. Latency =
``time.time_ns()`` when the frame's last byte was read minus its ``capture_ts_ns`` (the
sender's hand-off, wall clock; both namespaces share the host's clock), ms. Stops after
SECONDS, when the stream ends, or on SIGTERM; then prints one JSON object on stdout::

    {"frames": 598, "exact": 598, "corrupt": 0, "latency_ms": [...], "frame_ids": [...]}
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn


def main(host: str, port: int, frames_path: str, seconds: float) -> None:
    from mcastcam.client import iter_frames
    from mcastcam.sender.sources.file import split_mjpeg

    known = {
        hashlib.sha256(f).digest() for f in split_mjpeg(Path(frames_path).read_bytes(), "bench")[0]
    }
    out: dict[str, Any] = {"frames": 0, "exact": 0, "corrupt": 0, "latency_ms": [],
                           "frame_ids": []}  # fmt: skip

    def stop(_sig: int, _frame: object) -> NoReturn:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    end = time.monotonic() + seconds
    try:
        for frame in iter_frames(f"tcp://{host}:{port}", reconnect=True, timeout=2.0):
            now = time.time_ns()
            out["frames"] += 1
            if hashlib.sha256(frame.jpeg).digest() in known:
                out["exact"] += 1
            else:
                out["corrupt"] += 1
            out["latency_ms"].append((now - frame.capture_ts_ns) / 1e6)
            out["frame_ids"].append(frame.frame_id)
            if time.monotonic() > end:
                break
    except (SystemExit, KeyboardInterrupt):
        pass
    except Exception as exc:  # reported with the counts
        out["error"] = repr(exc)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
