"""N concurrent ``/stream`` clients in one asyncio process; counts parts per client.

    python fanout_clients.py HOST PORT N WARMUP_S WINDOW_S

Each client sends ``GET /stream``, then counts multipart boundaries (``--boundarydonotcross``,
carried across reads) in what it receives. Only boundaries seen between WARMUP_S and
WARMUP_S + WINDOW_S (after all clients connected) count. Prints one JSON line: per-client
frame counts, connect failures, and this process's wall window.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

MARK = b"--boundarydonotcross"


class Client(asyncio.Protocol):
    def __init__(self, state: dict[str, bool]) -> None:
        self.state = state
        self.frames = 0
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        if self.state["counting"]:
            self.frames += buf.count(MARK) - self.tail.count(MARK)
        self.tail = buf[-(len(MARK) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def main(host: str, port: int, n: int, warmup: float, window: float) -> None:
    loop = asyncio.get_running_loop()
    state = {"counting": False}
    clients: list[Client] = []
    transports = []
    failures = 0
    for i in range(0, n, 50):
        batch = [
            loop.create_connection(lambda: Client(state), host, port) for _ in range(min(50, n - i))
        ]
        for res in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(res, BaseException):
                failures += 1
            else:
                transports.append(res[0])
                clients.append(res[1])
    await asyncio.sleep(warmup)
    t0 = time.monotonic()
    state["counting"] = True
    await asyncio.sleep(window)
    state["counting"] = False
    t1 = time.monotonic()
    print(
        json.dumps(
            {
                "frames": [c.frames for c in clients],
                "failures": failures,
                "alive": sum(1 for c in clients if not c.closed.done()),
                "window_s": t1 - t0,
            }
        ),
        flush=True,
    )
    for t in transports:
        t.abort()


if __name__ == "__main__":
    h, p, n, w, win = sys.argv[1:6]
    asyncio.run(main(h, int(p), int(n), float(w), float(win)))
