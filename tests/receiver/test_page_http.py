"""The page's HTTP side: the "no signal" JPEG on /stream and /snapshot, and /senders."""

from __future__ import annotations

import asyncio
import json

from mcastcam import net
from mcastcam.receiver.fanout import FrameHub
from mcastcam.receiver.nosignal import no_signal_jpeg
from mcastcam.receiver.senders import SenderWatch
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H

NO_SIGNAL = no_signal_jpeg()
CHROMIUM_IMG = "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


async def _read_for(port: int, target: str, seconds: float, headers: list[str]) -> list[H.Part]:
    status, _, reader, writer = await H.raw_get(port, target, headers)
    assert b" 200 " in status
    body = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                break
            body += chunk
    finally:
        await H.close_writer(writer)
    return H.parse_multipart(body)


def test_snapshot_503_carries_the_no_signal_jpeg_for_browsers_only() -> None:
    async def main() -> None:
        async with H.http_server(FrameHub(), no_signal=NO_SIGNAL) as server:
            code, head, body = await H.fetch(server.port, "/snapshot", [CHROMIUM_IMG])
            assert code == 503 and head["content-type"] == "image/jpeg" and body == NO_SIGNAL
            assert head["x-no-signal"] == "no frame: no frame received yet"
            for accept in ([], ["Accept: */*"], ["Accept: image/jpeg"]):
                code, head, body = await H.fetch(server.port, "/snapshot", accept)
                assert code == 503 and body == b"no frame: no frame received yet\n"
                assert head["content-type"].startswith("text/plain")

    asyncio.run(main())


def test_stream_sends_no_signal_once_a_second_then_real_frames(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 3)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, no_signal=NO_SIGNAL, max_frame_age=0.5) as server:
            reader = asyncio.create_task(
                _read_for(server.port, "/stream", 4.0, [CHROMIUM_IMG])
            )
            plain = asyncio.create_task(_read_for(server.port, "/stream", 4.0, []))
            await asyncio.sleep(1.6)  # two "no signal" frames (at 0 s and 1 s)
            for i, jpeg in enumerate(frames):
                hub.publish(H.served(jpeg, i + 1))
            # then nothing: after 0.5 s the newest frame is too old, "no signal" again
            parts, plain_parts = await reader, await plain
        bodies = [p.body for p in parts]
        first_real = bodies.index(frames[0])
        assert 2 <= first_real <= 3 and set(bodies[:first_real]) == {NO_SIGNAL}
        assert bodies[first_real : first_real + 3] == frames
        assert 1 <= len(bodies[first_real + 3 :]) <= 3
        assert set(bodies[first_real + 3 :]) == {NO_SIGNAL}
        assert parts[0].headers["X-Frame-Id"] == "0"
        # a player (no image Accept) gets the real frames only
        assert [p.body for p in plain_parts] == frames

    asyncio.run(main())


def test_stream_no_signal_query_overrides_accept(data_files: DataFiles) -> None:
    async def main() -> None:
        async with H.http_server(FrameHub(), no_signal=NO_SIGNAL) as server:
            on = asyncio.create_task(_read_for(server.port, "/stream?no_signal=1", 0.5, []))
            off = asyncio.create_task(
                _read_for(server.port, "/stream?no_signal=0", 0.5, [CHROMIUM_IMG])
            )
            assert [p.body for p in await on] == [NO_SIGNAL]
            assert await off == []

    asyncio.run(main())


def test_senders_route_says_why_the_list_is_empty() -> None:
    async def main() -> None:
        async with H.http_server(FrameHub()) as server:
            code, _, body = await H.fetch(server.port, "/senders")
            assert code == 200
            assert json.loads(body) == {"available": False, "senders": [],
                                        "reason": "discovery is off in this receiver"}  # fmt: skip
        watch = SenderWatch(net.resolve_interface("lo"), 8990)
        watch.start()
        try:
            async with H.http_server(FrameHub(), senders=watch) as server:
                code, _, body = await H.fetch(server.port, "/senders")
            got = json.loads(body)
            assert got["available"] is False and got["interface"] == "lo"
            assert "lo has no broadcast address" in got["reason"] and watch.queries == 0
        finally:
            await watch.close()

    asyncio.run(main())
