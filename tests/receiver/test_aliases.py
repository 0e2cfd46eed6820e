"""URLs users paste from other tools (issue #14 item 5) answer like the canonical routes."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mcastcam.receiver.fanout import FrameHub
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H

BOUNDARY_LINE = b"--boundarydonotcross\r\n"
STREAM_URLS = ["/stream", "/stream.mjpg", "/video.mjpg", "/?action=stream", "/?action=stream_0"]
SNAPSHOT_URLS = ["/snapshot", "/snapshot.jpg", "/?action=snapshot", "/?action=snapshot_0"]


async def _read_parts(port: int, target: str, hub: FrameHub, frames: list[bytes]) -> tuple[
    bytes, dict[str, str], list[bytes]
]:  # fmt: skip
    """Open ``target`` as a stream client, publish ``frames``, read them back."""
    status, head, reader, writer = await H.raw_get(port, target)
    try:
        assert await reader.readexactly(len(BOUNDARY_LINE)) == BOUNDARY_LINE
        await H.publish_paced(hub, frames, 0.005)
        got = []
        for _ in frames:
            part_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            match = re.search(rb"Content-Length: (\d+)", part_head)
            assert match is not None, part_head
            got.append(await reader.readexactly(int(match.group(1))))
            assert await reader.readexactly(2 + len(BOUNDARY_LINE)) == b"\r\n" + BOUNDARY_LINE
        return status, head, got
    finally:
        await H.close_writer(writer)


@pytest.mark.parametrize("target", STREAM_URLS)
def test_stream_alias_same_bytes_and_headers(data_files: DataFiles, target: str) -> None:
    frames = H.webcam_frames(data_files, 4)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            status, head, got = await _read_parts(server.port, target, hub, frames)
            assert status.startswith(b"HTTP/1.1 200")
            assert head["content-type"] == "multipart/x-mixed-replace;boundary=boundarydonotcross"
            assert "transfer-encoding" not in head
            assert got == frames
            await H.wait_for(lambda: len(hub) == 0)  # the alias client was a hub subscriber

    asyncio.run(main())


@pytest.mark.parametrize("target", SNAPSHOT_URLS)
def test_snapshot_alias_like_snapshot(data_files: DataFiles, target: str) -> None:
    frames = H.webcam_frames(data_files, 2)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            code, _, body = await H.fetch(server.port, target)
            assert code == 503 and b"no frame" in body  # the same answer without a frame
            hub.publish(H.served(frames[1], 42))
            code, head, body = await H.fetch(server.port, target)
            assert code == 200 and body == frames[1]
            assert head["content-type"] == "image/jpeg"
            assert head["x-frame-id"] == "42"
            assert int(head["content-length"]) == len(frames[1])

    asyncio.run(main())


def test_other_inputs_and_unknown_paths_are_404() -> None:
    async def main() -> None:
        async with H.http_server(FrameHub()) as server:
            for target in ("/?action=stream_1", "/?action=snapshot_7", "/video.mjpeg", "/x.jpg"):
                assert (await H.fetch(server.port, target))[0] == 404, target

    asyncio.run(main())


@pytest.mark.clients
@pytest.mark.parametrize("target", ["/snapshot.jpg", "/?action=snapshot_0"])
def test_curl_snapshot_alias(data_files: DataFiles, tmp_path: Path, target: str) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    frame = H.webcam_frames(data_files, 1)[0]
    out = tmp_path / "snap.jpg"

    async def main() -> None:
        hub = FrameHub()
        hub.publish(H.served(frame, 3))
        async with H.http_server(hub) as server:
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sf", "--max-time", "10", "-o", str(out), f"{server.url}{target}",
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            assert await asyncio.wait_for(proc.wait(), 15) == 0

    asyncio.run(main())
    assert out.read_bytes() == frame
