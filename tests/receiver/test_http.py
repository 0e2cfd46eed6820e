"""HTTP re-serve against real clients on loopback: curl, ffmpeg, raw sockets, many streams."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from mcastcam.receiver.fanout import FrameHub
from tests.browser import chromium_screenshot, need_isolated_browser
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H

BOUNDARY_LINE = b"--boundarydonotcross\r\n"
TIMESTAMP_RE = re.compile(r"^\d{10,}\.\d{6}$")


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


# -- stream: exact bytes -----------------------------------------------------------------


@pytest.mark.clients
def test_curl_reads_stream_byte_identical(data_files: DataFiles, tmp_path: Path) -> None:
    need("curl")
    frames = H.webcam_frames(data_files, 30)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            proc = await asyncio.create_subprocess_exec(
                "curl", "-s", "--max-time", "20", "-D", str(tmp_path / "head.txt"),
                "-o", str(tmp_path / "body.bin"), f"{server.url}/stream",
            )
            try:
                await H.wait_for(lambda: len(hub) == 1)
                await H.publish_paced(hub, frames, 0.01)
                await H.wait_for(
                    lambda: (
                        all(not s.busy for s in hub.subscribers)
                        and next(hub.subscribers).frames_sent == len(frames)
                    )
                )
            finally:
                await server.close()  # ends the close-delimited body
                assert await asyncio.wait_for(proc.wait(), 10) == 0

    asyncio.run(main())
    head = (tmp_path / "head.txt").read_bytes().decode("latin-1")
    lines = head.split("\r\n")
    assert re.fullmatch(r"HTTP/1\.[01] 200 OK", lines[0])
    fields = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
    assert fields["content-type"] == "multipart/x-mixed-replace;boundary=boundarydonotcross"
    assert "transfer-encoding" not in fields
    assert "content-length" not in fields
    assert fields["connection"] == "close"
    assert "no-cache" in fields["cache-control"] and "no-store" in fields["cache-control"]
    assert fields["pragma"] == "no-cache"
    assert "expires" in fields
    assert "access-control-allow-origin" not in fields

    body = (tmp_path / "body.bin").read_bytes()
    assert body.startswith(BOUNDARY_LINE + b"Content-Type: image/jpeg\r\nContent-Length: ")
    assert body.endswith(b"\xff\xd9\r\n" + BOUNDARY_LINE)  # next boundary right after a frame
    parts = H.parse_multipart(body)
    assert [p.body for p in parts] == frames
    assert [int(p.headers["X-Frame-Id"]) for p in parts] == list(range(len(frames)))
    for p in parts:
        assert list(p.headers) == ["Content-Type", "Content-Length", "X-Timestamp", "X-Frame-Id"]
        assert p.headers["Content-Type"] == "image/jpeg"
        assert TIMESTAMP_RE.match(p.headers["X-Timestamp"])
        assert abs(float(p.headers["X-Timestamp"]) - time.time()) < 60


@pytest.mark.clients
def test_action_stream_alias_same_bytes(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 5)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            status, head, reader, writer = await H.raw_get(server.port, "/?action=stream")
            try:
                assert status.startswith(b"HTTP/1.1 200")
                assert "transfer-encoding" not in head
                assert head["content-type"].endswith(";boundary=boundarydonotcross")
                assert await reader.readexactly(len(BOUNDARY_LINE)) == BOUNDARY_LINE
                await H.publish_paced(hub, frames, 0.005)
                got = []
                for _ in frames:
                    part_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    n = int(re.search(rb"Content-Length: (\d+)", part_head).group(1))
                    got.append(await reader.readexactly(n))
                    assert await reader.readexactly(2 + len(BOUNDARY_LINE)) == (
                        b"\r\n" + BOUNDARY_LINE
                    )
                assert got == frames
            finally:
                await H.close_writer(writer)

    asyncio.run(main())


@pytest.mark.clients
def test_ffmpeg_mpjpeg_reads_frames_byte_identical(data_files: DataFiles) -> None:
    need("ffmpeg")
    frames = H.webcam_frames(data_files, 60)
    n = 10

    async def main() -> bytes:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            proc = await asyncio.create_subprocess_exec(
                "ffmpeg", "-nostdin", "-loglevel", "error", "-f", "mpjpeg",
                "-i", f"{server.url}/stream", "-frames:v", str(n), "-c", "copy",
                "-f", "image2pipe", "-",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                await H.wait_for(lambda: len(hub) == 1, timeout=10)
                publisher = asyncio.create_task(H.publish_paced(hub, frames, 0.03))
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                assert proc.returncode == 0, err
                publisher.cancel()
                return out
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    out = asyncio.run(main())
    got = H.naive_split(out)
    assert len(got) == n
    first = frames.index(got[0])
    assert got == frames[first : first + n]


# -- snapshot ----------------------------------------------------------------------------


def test_snapshot_503_before_frame_then_latest_then_fresh(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 3)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            code, head, body = await H.fetch(server.port, "/snapshot")
            assert code == 503 and loop.time() - t0 < 1.0
            assert body.endswith(b"\n") and body.count(b"\n") == 1 and b"no frame" in body

            hub.publish(H.served(frames[0], 7))
            for target in ("/snapshot", "/?action=snapshot"):
                code, head, body = await H.fetch(server.port, target)
                assert code == 200
                assert body == frames[0]
                assert head["content-type"] == "image/jpeg"
                assert head["x-frame-id"] == "7"
                assert TIMESTAMP_RE.match(head["x-timestamp"])
                assert head["age"] == "0"
                assert "transfer-encoding" not in head
                assert int(head["content-length"]) == len(frames[0])

            # fresh, nothing new: 503 after ~timeout, never a hang
            t0 = loop.time()
            code, _, body = await H.fetch(server.port, "/snapshot?fresh=1&timeout=0.2")
            elapsed = loop.time() - t0
            assert code == 503 and b"no new frame" in body
            assert 0.15 <= elapsed < 1.0

            # fresh, a frame arrives during the wait: that frame
            async def later() -> None:
                await asyncio.sleep(0.1)
                hub.publish(H.served(frames[1], 8))

            task = asyncio.create_task(later())
            code, head, body = await H.fetch(server.port, "/snapshot?fresh=1&timeout=5")
            await task
            assert code == 200 and body == frames[1] and head["x-frame-id"] == "8"

            code, _, _ = await H.fetch(server.port, "/snapshot?fresh=1&timeout=abc")
            assert code == 400
            code, _, _ = await H.fetch(server.port, "/snapshot?fresh=1&timeout=-1")
            assert code == 400

            # a huge timeout is capped (FRESH_TIMEOUT_MAX): the request still answers
            hub.set_online(False, "sender lost: no heartbeat for 3 s")
            code, _, body = await H.fetch(server.port, "/snapshot?fresh=1&timeout=1e9")
            assert code == 503 and body == b"no frame: sender lost: no heartbeat for 3 s\n"

    asyncio.run(main())


def test_offline_keeps_stream_clients_and_resumes(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 4)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            hub.publish(H.served(frames[0], 0))
            _, _, reader, writer = await H.raw_get(server.port, "/stream")
            try:
                await reader.readexactly(len(BOUNDARY_LINE))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert b"X-Frame-Id: 0\r\n" in head  # the latest frame at once
                await reader.readexactly(len(frames[0]) + 2 + len(BOUNDARY_LINE))

                hub.set_online(False, "sender lost")
                code, _, _ = await H.fetch(server.port, "/snapshot")
                assert code == 503
                await asyncio.sleep(0.2)
                assert len(hub) == 1  # still connected

                hub.publish(H.served(frames[1], 1))  # back online
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert b"X-Frame-Id: 1\r\n" in head
                assert await reader.readexactly(len(frames[1])) == frames[1]
                code, _, body = await H.fetch(server.port, "/snapshot")
                assert code == 200 and body == frames[1]
            finally:
                await H.close_writer(writer)
            await H.wait_for(lambda: len(hub) == 0)

    asyncio.run(main())


# -- status, page, errors, auth, CORS -----------------------------------------------------


def test_status_merges_app_status_and_clients(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 3)

    async def main() -> None:
        hub = FrameHub()
        app_status = {"streams": [{"stream_id": "1234abcd", "frames_completed": 3}]}
        async with H.http_server(hub, status=lambda: app_status) as server:
            _, _, _reader, writer = await H.raw_get(server.port, "/stream")
            try:
                await H.wait_for(lambda: len(hub) == 1)
                await H.publish_paced(hub, frames, 0.01)
                code, head, body = await H.fetch(server.port, "/status")
                assert code == 200 and head["content-type"].startswith("application/json")
                status = json.loads(body)
                assert status["streams"] == app_status["streams"]
                assert status["frames_published"] == 3
                (client,) = status["clients"]
                assert client["kind"] == "http"
                assert client["address"].startswith("127.0.0.1:")
                assert client["frames_sent"] == 3 and client["frames_skipped"] == 0
                assert client["fps"] > 0
                assert isinstance(client["since"], float)
            finally:
                await H.close_writer(writer)

    asyncio.run(main())


def test_page_is_self_contained() -> None:
    async def main() -> None:
        async with H.http_server(FrameHub()) as server:
            code, head, body = await H.fetch(server.port, "/")
            assert code == 200 and head["content-type"].startswith("text/html")
            page = body.decode()
            assert '<img id="view" src="stream?advance_headers=1"' in page
            assert 'fetch("status"' in page and "setInterval(poll, 1000)" in page
            assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no external resources

    asyncio.run(main())


def test_bad_requests_404_405_400() -> None:
    async def main() -> None:
        async with H.http_server(FrameHub()) as server:
            assert (await H.fetch(server.port, "/nope"))[0] == 404
            assert (await H.fetch(server.port, "/?action=bogus"))[0] == 404
            assert (await H.fetch(server.port, "/stream", method="POST"))[0] == 405
            assert (await H.fetch(server.port, "/snapshot", method="DELETE"))[0] == 405
            code, head, body = await H.fetch(server.port, "/stream", method="HEAD")
            assert code == 200 and body == b"" and "boundary=" in head["content-type"]
            # garbage request line: a 400, and the server lives on
            reader, writer = await asyncio.open_connection(H.LOOPBACK, server.port)
            writer.write(b"\x16\x03\x01 not http\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            await H.close_writer(writer)
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
            assert (await H.fetch(server.port, "/"))[0] == 200

    asyncio.run(main())


def test_basic_auth(data_files: DataFiles) -> None:
    frame = H.webcam_frames(data_files, 1)[0]

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, auth=("cam", "s3cret:x")) as server:
            hub.publish(H.served(frame, 1))
            for target in ("/snapshot", "/status", "/", "/stream"):
                code, head, _ = await H.fetch(server.port, target)
                assert code == 401
                assert head["www-authenticate"].startswith('Basic realm="mcastcam"')
            good = "Authorization: Basic " + base64.b64encode(b"cam:s3cret:x").decode()
            bad = "Authorization: Basic " + base64.b64encode(b"cam:s3cret").decode()
            assert (await H.fetch(server.port, "/snapshot", [bad]))[0] == 401
            assert (await H.fetch(server.port, "/snapshot", ["Authorization: Basic !!"]))[0] == 401
            code, _, body = await H.fetch(server.port, "/snapshot", [good])
            assert code == 200 and body == frame
            assert len(hub) == 0  # no unauthenticated stream got subscribed

    asyncio.run(main())


def test_cors_only_when_asked(data_files: DataFiles) -> None:
    async def main() -> None:
        async with H.http_server(FrameHub()) as server:
            _, head, _ = await H.fetch(server.port, "/status")
            assert "access-control-allow-origin" not in head
        hub = FrameHub()
        async with H.http_server(hub, cors="https://dash.example") as server:
            _, head, _ = await H.fetch(server.port, "/status")
            assert head["access-control-allow-origin"] == "https://dash.example"
            _, head, _ = await H.fetch(server.port, "/snapshot")
            assert head["access-control-allow-origin"] == "https://dash.example"
            status, head, _, writer = await H.raw_get(server.port, "/stream")
            await H.close_writer(writer)
            assert status.startswith(b"HTTP/1.1 200")
            assert head["access-control-allow-origin"] == "https://dash.example"

    asyncio.run(main())


# -- many clients, stalled clients, limits ------------------------------------------------


async def _count_stream(port: int, expect: int, started: asyncio.Event | None = None) -> list[int]:
    """A raw stream client: frame ids received until ``expect`` frames or EOF."""
    _, head, reader, writer = await H.raw_get(port, "/stream")
    ids: list[int] = []
    try:
        assert "transfer-encoding" not in head
        await reader.readexactly(len(BOUNDARY_LINE))
        while len(ids) < expect:
            part = await reader.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"Content-Length: (\d+)", part).group(1))
            ids.append(int(re.search(rb"X-Frame-Id: (\d+)", part).group(1)))
            await reader.readexactly(n + 2 + len(BOUNDARY_LINE))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        await H.close_writer(writer)
    return ids


@pytest.mark.slow
def test_200_concurrent_stream_clients(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 40)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            clients = [
                asyncio.create_task(_count_stream(server.port, len(frames))) for _ in range(200)
            ]
            await H.wait_for(lambda: len(hub) == 200, timeout=20)
            await H.publish_paced(hub, frames, 0.05)
            results = await asyncio.wait_for(asyncio.gather(*clients), 30)
        for ids in results:
            assert len(ids) >= 0.95 * len(frames), len(ids)
            assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, no repeats

    asyncio.run(main())


def _stalled_socket(port: int) -> object:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((H.LOOPBACK, port))
    sock.sendall(f"GET /stream HTTP/1.1\r\nHost: {H.LOOPBACK}\r\n\r\n".encode())
    return sock  # never read


@pytest.mark.slow
def test_stalled_client_skips_and_does_not_slow_others(data_files: DataFiles) -> None:
    big = H.naive_split((data_files / "bedroom_960x540_420_first100.mjpeg").read_bytes())[:100]

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, stall_timeout=60) as server:
            stalled = await asyncio.to_thread(_stalled_socket, server.port)
            try:
                await H.wait_for(lambda: len(hub) == 1)
                (stalled_sub,) = hub.subscribers
                readers = [
                    asyncio.create_task(_count_stream(server.port, len(big))) for _ in range(3)
                ]
                await H.wait_for(lambda: len(hub) == 4)
                await H.publish_paced(hub, big, 0.02)
                results = await asyncio.wait_for(asyncio.gather(*readers), 30)
                for ids in results:
                    assert len(ids) >= 0.95 * len(big)
                # the kernel buffers took a few MB, then it skipped; every frame is accounted
                assert stalled_sub.busy
                assert stalled_sub.frames_skipped >= 10
                assert (
                    stalled_sub.frames_sent + stalled_sub.frames_skipped + stalled_sub.pending
                    == len(big)
                )
                assert len(hub) == 1
            finally:
                stalled.close()  # type: ignore[attr-defined]
            await H.wait_for(lambda: len(hub) == 0, timeout=10)

    asyncio.run(main())


def test_stalled_stream_client_is_dropped_after_stall_timeout(data_files: DataFiles) -> None:
    big = H.naive_split((data_files / "bedroom_960x540_420_first100.mjpeg").read_bytes())[:40]

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, stall_timeout=0.5) as server:
            stalled = await asyncio.to_thread(_stalled_socket, server.port)
            try:
                await H.wait_for(lambda: len(hub) == 1)
                (sub,) = hub.subscribers
                # bounded: at most 8 x 40 frames of ~64 kB, until the kernel buffers are full
                publisher = asyncio.create_task(H.publish_paced(hub, big * 8, 0.01))
                await H.wait_for(lambda: len(hub) == 0, timeout=15)
                assert sub.busy and sub.frames_skipped > 0
                publisher.cancel()
            finally:
                stalled.close()  # type: ignore[attr-defined]

    asyncio.run(main())


def test_max_clients_503_then_room_again(data_files: DataFiles) -> None:
    async def main() -> None:
        hub = FrameHub(max_clients=2)
        async with H.http_server(hub) as server:
            conns = [await H.raw_get(server.port, "/stream") for _ in range(2)]
            await H.wait_for(lambda: len(hub) == 2)
            code, _, body = await H.fetch(server.port, "/stream")
            assert code == 503 and b"too many clients (max_clients=2)" in body
            assert hub.clients_refused == 1
            await H.close_writer(conns[0][3])
            await H.wait_for(lambda: len(hub) == 1)
            status, _, _, writer = await H.raw_get(server.port, "/stream")
            assert status.startswith(b"HTTP/1.1 200")
            await H.close_writer(writer)
            await H.close_writer(conns[1][3])

    asyncio.run(main())


def test_close_ends_streams_promptly() -> None:
    async def main() -> None:
        hub = FrameHub()
        server = await H.start_http(hub, H.LOOPBACK, 0)
        _, _, reader, writer = await H.raw_get(server.port, "/stream")
        await H.wait_for(lambda: len(hub) == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await server.close()
        assert loop.time() - t0 < 3.0
        assert await asyncio.wait_for(reader.read(), 5) == BOUNDARY_LINE
        await H.close_writer(writer)
        assert len(hub) == 0

    asyncio.run(main())


# -- a real browser ---------------------------------------------------------------------


def _png_to_rgb(png: Path, width: int, height: int) -> bytes:
    """Decode a PNG to raw rgb24 rows with ffmpeg (no image library needed)."""
    import subprocess

    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(png), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-"],
        check=True, capture_output=True, timeout=30,
    ).stdout
    assert len(out) == width * height * 3
    return out


def _region_stats(rgb: bytes, width: int, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Mean and standard deviation of the channel values inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    values = [v for y in range(y0, y1, 4) for v in rgb[(y * width + x0) * 3 : (y * width + x1) * 3]]
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return mean, var**0.5


@pytest.mark.clients
@pytest.mark.slow
def test_headless_chromium_draws_the_stream(data_files: DataFiles, tmp_path: Path) -> None:
    need_isolated_browser()
    need("ffmpeg")
    frames = H.webcam_frames(data_files, 200)
    shot = tmp_path / "shot.png"
    status_calls = []

    def status() -> dict[str, object]:
        status_calls.append(1)
        return {"streams": []}

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, status=status) as server:
            publisher = asyncio.create_task(H.publish_paced(hub, frames, 0.05))
            try:
                code, err = await chromium_screenshot(server.port, "/", shot, tmp_path)
            finally:
                publisher.cancel()
            assert code == 0, err[-2000:]
            assert hub.frames_published > 0

    asyncio.run(main())
    rgb = _png_to_rgb(shot, 800, 600)
    # the 640x480 image is centred at the top: textured, not the #111 page background
    mean, std = _region_stats(rgb, 800, (120, 20, 680, 460))
    assert std > 20 and abs(mean - 0x11) > 20, (mean, std)
    # the left margin is plain page background
    mean, std = _region_stats(rgb, 800, (0, 10, 60, 470))
    assert std < 5 and abs(mean - 0x11) < 5, (mean, std)
    assert status_calls  # the page's script polled /status


def test_idle_connection_without_request_times_out() -> None:
    async def main() -> None:
        async with H.http_server(FrameHub(), keepalive_timeout=0.3) as server:
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection(H.LOOPBACK, server.port)
            t0 = loop.time()
            try:
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
            finally:
                await H.close_writer(writer)
            assert loop.time() - t0 < 5.0

    asyncio.run(main())


def test_advance_headers_sends_the_next_parts_headers_right_after_each_frame(
    data_files: DataFiles, tmp_path: Path
) -> None:
    need("curl")
    frames = H.webcam_frames(data_files, 10)
    part_head = BOUNDARY_LINE + b"Content-Type: image/jpeg\r\n\r\n"

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            proc = await asyncio.create_subprocess_exec(
                "curl", "-s", "--max-time", "20", "-o", str(tmp_path / "body.bin"),
                f"{server.url}/stream?advance_headers=1",
            )
            try:
                await H.wait_for(lambda: len(hub) == 1)
                await H.publish_paced(hub, frames, 0.01)
                await H.wait_for(
                    lambda: (
                        all(not s.busy for s in hub.subscribers)
                        and next(hub.subscribers).frames_sent == len(frames)
                    )
                )
            finally:
                await server.close()
                assert await asyncio.wait_for(proc.wait(), 10) == 0

    asyncio.run(main())
    body = (tmp_path / "body.bin").read_bytes()
    assert body.startswith(part_head)
    assert body.endswith(b"\xff\xd9\r\n" + part_head)  # the next part is announced at once
    parts = body.split(part_head)
    assert parts[0] == b"" and parts[-1] == b""
    assert [p.removesuffix(b"\r\n") for p in parts[1:-1]] == frames
