"""Helpers for the re-serve tests: real frames, a paced publisher, a raw HTTP reader.

Test modules load this file by path (``_load_helpers()``): the suite runs in importlib
mode and test folders are not packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from mcastcam.protocol.frame import Frame
from mcastcam.receiver.fanout import FrameHub
from mcastcam.receiver.http import HttpServer, start_http
from mcastcam.receiver.tcp import TcpServer, start_tcp
from tests.conftest import DataFiles, naive_split

LOOPBACK = "127.0.0.1"
WEBCAM = "webcam_640x480_420.mjpeg"


def webcam_frames(data_files: DataFiles, n: int | None = None) -> list[bytes]:
    frames = naive_split((data_files / WEBCAM).read_bytes())
    return frames if n is None else frames[:n]


def served(jpeg: bytes, frame_id: int, *, view: bool = True) -> Frame:
    """A frame as the reassembler hands it over (read-only memoryview by default)."""
    loop = asyncio.get_running_loop()
    data: bytes | memoryview = memoryview(bytearray(jpeg)).toreadonly() if view else jpeg
    return Frame(
        jpeg=data,
        frame_id=frame_id,
        capture_ts_ns=time.time_ns(),
        stream_id=0x1234ABCD,
        completed_at=loop.time(),
    )


async def publish_paced(
    hub: FrameHub, frames: Sequence[bytes], interval: float, *, first_id: int = 0
) -> list[Frame]:
    """Publish ``frames`` one every ``interval`` seconds; returns what was served."""
    out = []
    for i, jpeg in enumerate(frames):
        frame = hub.publish(served(jpeg, first_id + i))
        assert frame is not None
        out.append(frame)
        await asyncio.sleep(interval)
    return out


@contextlib.asynccontextmanager
async def http_server(hub: FrameHub, **kwargs: object) -> AsyncIterator[HttpServer]:
    server = await start_http(hub, LOOPBACK, 0, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def tcp_server(hub: FrameHub, **kwargs: object) -> AsyncIterator[TcpServer]:
    server = await start_tcp(hub, LOOPBACK, 0, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        await server.close()


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


def parse_multipart(body: bytes, boundary: bytes = b"boundarydonotcross") -> list[Part]:
    """Independent strict parser of an mjpg-streamer body (test oracle; needs Content-Length).

    A truncated last part (the client stopped mid-frame) is ignored.
    """
    delim = b"--" + boundary + b"\r\n"
    assert body.startswith(delim), body[:80]
    pos = len(delim)
    parts = []
    while pos < len(body):
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            break
        headers = {}
        for line in body[pos:head_end].split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip()] = value.strip()
        length = int(headers["Content-Length"])
        start = head_end + 4
        if start + length + len(b"\r\n") + len(delim) > len(body):
            break
        parts.append(Part(headers, body[start : start + length]))
        trailer = body[start + length : start + length + 2 + len(delim)]
        assert trailer == b"\r\n" + delim, trailer
        pos = start + length + 2 + len(delim)
    return parts


async def raw_get(
    port: int, target: str, headers: Sequence[str] = (), *, method: str = "GET"
) -> tuple[bytes, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a raw HTTP/1.1 request; return the status line, headers, and the open stream."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {LOOPBACK}:{port}", *headers, "", ""]
    writer.write("\r\n".join(lines).encode())
    status = await asyncio.wait_for(reader.readline(), 5)
    head: dict[str, str] = {}
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        head[name.strip().lower()] = value.strip()
    return status, head, reader, writer


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def fetch(
    port: int, target: str, headers: Sequence[str] = (), *, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One full request with ``Connection: close``: status code, headers, body."""
    status, head, reader, writer = await raw_get(
        port, target, [*headers, "Connection: close"], method=method
    )
    try:
        body = await asyncio.wait_for(reader.read(), 15)
    finally:
        await close_writer(writer)
    return int(status.split()[1]), head, body


async def wait_for(predicate: object, timeout: float = 5.0, step: float = 0.01) -> None:  # noqa: ASYNC109
    """Poll ``predicate()`` until true (bounded by ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
