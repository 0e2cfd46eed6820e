"""The physical reference for fan-out: a minimal asyncio TCP writer of the same bytes.

    python tcp_ref.py FILE.mjpeg FPS PORT

Serves any connection as ``/stream``: after reading the request it writes the same HTTP
response head and multipart parts as mcastcam-recv (``encode_http_part``), one frame every
1/FPS s from a fixed schedule (``loop.call_at``), to every client whose transport buffer is
empty, skipping busy ones (the same one-slot rule, without the slot). No reassembly, no hub,
no aiohttp: what it costs to push these bytes from Python asyncio to N sockets.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mcastcam.protocol.frame import Frame
from mcastcam.receiver.http import STREAM_BOUNDARY, encode_http_part
from mcastcam.sender.sources.file import split_mjpeg

HEAD = (
    "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary="
    f"{STREAM_BOUNDARY}\r\nConnection: close\r\n\r\n--{STREAM_BOUNDARY}\r\n"
).encode()


class Conn(asyncio.Protocol):
    def __init__(self, clients: set[Conn]) -> None:
        self.clients = clients
        self.transport: asyncio.Transport | None = None
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.started and b"\r\n\r\n" in data and self.transport is not None:
            self.started = True
            self.transport.write(HEAD)
            self.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.discard(self)


async def main(path: str, fps: float, port: int) -> None:
    frames = split_mjpeg(Path(path).read_bytes(), path)[0]  # noqa: ASYNC240
    loop = asyncio.get_running_loop()
    clients: set[Conn] = set()
    server = await loop.create_server(lambda: Conn(clients), "127.0.0.1", port, backlog=2048)
    interval = 1.0 / fps
    t0 = loop.time()
    i = 0

    def tick() -> None:
        nonlocal i
        f = frames[i % len(frames)]
        pieces = encode_http_part(Frame(f, i, 0, 0, loop.time()))
        for conn in list(clients):
            tr = conn.transport
            if tr is None or tr.is_closing() or tr.get_write_buffer_size() > 0:
                continue
            for piece in pieces:
                tr.write(piece)
        i += 1
        loop.call_at(t0 + i * interval, tick)

    loop.call_at(t0, tick)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
