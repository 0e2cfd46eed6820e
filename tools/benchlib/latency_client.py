"""Reads ``/stream`` for S seconds; prints, per frame id, when its JPEG's last byte arrived.

    python latency_client.py HOST PORT SECONDS

Output: one JSON object ``{frame_id: monotonic_ns}`` (``time.monotonic_ns``, CLOCK_MONOTONIC,
the same clock as the receiver's ``loop.time()`` on Linux).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time

_HDR = re.compile(rb"Content-Length: (\d+)\r\n.*?X-Frame-Id: (\d+)\r\n\r\n", re.S)


def main(host: str, port: int, seconds: float) -> None:
    out: dict[int, int] = {}
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")
        s.settimeout(0.5)
        buf = bytearray()
        need: tuple[int, int] | None = None  # (frame id, bytes still missing)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                chunk = s.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            now = time.monotonic_ns()
            buf += chunk
            while True:
                if need is None:
                    m = _HDR.search(buf)
                    if m is None:
                        break
                    need = (int(m.group(2)), int(m.group(1)))
                    del buf[: m.end()]
                fid, n = need
                if len(buf) < n:
                    break
                out[fid] = now
                del buf[:n]
                need = None
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
